"""Greedy and beam search over a next-token log-probability function."""

import tensorflow as tf

from keras_ragkd.rag.marginalization import NEGATIVE_LOG_PROB
from keras_ragkd.validation import check_integer


def beam_search(next_log_probs, batch_size, vocabulary_size, start_id, end_id,
                max_length, num_beams=1, padding_id=0):
    """Beam search (greedy when `num_beams=1`) for up to `max_length` steps.

    The loop is a `tf.while_loop` over a fixed-size buffer of token ids
    (`(batch * num_beams, max_length + 1)`, the start token first and
    `padding_id` after the last generated token), so it traces once, runs in
    an exported SavedModel and compiles with XLA. Finished beams (that emitted
    `end_id`) continue with `padding_id` at no cost, and the loop stops once
    every beam has finished (early stop).

    Args:
        next_log_probs: callable `(ids, position)` → the log-probabilities
            `(batch * num_beams, vocabulary_size)` of the token after
            `position`, where `ids` is the int32 buffer
            `(batch * num_beams, max_length + 1)` (beams of one example are
            contiguous) filled up to `position` (an int32 scalar tensor). A
            causal decoder can read the whole buffer and take its outputs at
            `position`.
        batch_size: int or scalar tensor.
        vocabulary_size: int.
        start_id: int, the first decoder input token.
        end_id: int, the token that ends a sequence.
        max_length: int, number of generated tokens.
        num_beams: int.
        padding_id: int, the token emitted after `end_id`.

    Returns:
        A tuple `(token_ids, scores)`: int32 `(batch, num_beams, max_length)`
        without the start token, best beam first, and float32
        `(batch, num_beams)` total log-probabilities.

    Example:

    >>> import numpy as np
    >>> table = tf.math.log([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]])
    >>> def next_log_probs(ids, position):
    ...     return tf.gather(table, tf.cast(ids[:, position] == 2, "int32"))
    >>> ids, _ = beam_search(next_log_probs, 1, 4, start_id=1, end_id=3,
    ...                      max_length=2)
    >>> ids.numpy().tolist()
    [[[2, 0]]]
    """
    check_integer("num_beams", num_beams)
    check_integer("max_length", max_length)
    rows = batch_size * num_beams
    starts = tf.fill([rows, 1], tf.constant(start_id, "int32"))
    ids = tf.concat(
        [starts, tf.fill([rows, max_length], tf.constant(padding_id, "int32"))], axis=1
    )
    first_beam_only = tf.one_hot(0, num_beams, on_value=0.0, off_value=NEGATIVE_LOG_PROB)
    scores = tf.tile(first_beam_only[None, :], [batch_size, 1])
    finished = tf.zeros([rows], "bool")
    pad_only = tf.one_hot(padding_id, vocabulary_size, on_value=0.0, off_value=NEGATIVE_LOG_PROB)
    positions = tf.range(max_length + 1)

    def step(position, ids, scores, finished):
        log_probs = tf.cast(next_log_probs(ids, position), "float32")
        log_probs = tf.where(finished[:, None], pad_only[None, :], log_probs)
        candidates = scores[:, :, None] + tf.reshape(
            log_probs, [batch_size, num_beams, vocabulary_size]
        )
        scores, flat_index = tf.math.top_k(
            tf.reshape(candidates, [batch_size, num_beams * vocabulary_size]), num_beams
        )
        parent = flat_index // vocabulary_size
        token = tf.cast(flat_index % vocabulary_size, "int32")
        previous = tf.gather(
            tf.reshape(ids, [batch_size, num_beams, max_length + 1]), parent, batch_dims=1
        )
        previous = tf.reshape(previous, [rows, max_length + 1])
        # Write `token` at `position + 1` of the parent beam's buffer.
        here = tf.equal(positions, position + 1)[None, :]
        ids = tf.where(here, tf.reshape(token, [rows, 1]), previous)
        was_finished = tf.gather(
            tf.reshape(finished, [batch_size, num_beams]), parent, batch_dims=1
        )
        finished = tf.reshape(
            was_finished | tf.equal(token, end_id) | tf.equal(token, padding_id), [rows]
        )
        return position + 1, ids, scores, finished

    def not_done(position, ids, scores, finished):
        return tf.logical_and(position < max_length, tf.logical_not(tf.reduce_all(finished)))

    _, ids, scores, _ = tf.while_loop(
        not_done,
        step,
        (tf.constant(0, "int32"), ids, scores, finished),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None, max_length + 1]),
            tf.TensorShape([None, num_beams]),
            tf.TensorShape([None]),
        ),
        maximum_iterations=max_length,
    )
    token_ids = tf.reshape(ids[:, 1:], [batch_size, num_beams, max_length])
    return token_ids, scores


def cached_rag_token_greedy_search(first_step, next_step, state, doc_log_probs, end_id,
                                   max_length, padding_id):
    """Greedy RAG-Token decoding over a generator's cached one-token step.

    At every step the `num_docs` passages' next-token distributions are
    marginalised, `log P(y_t|x, y_<t) = logsumexp_z(log P(z|x) +
    log P(y_t|x, z, y_<t))`, and the arg-max is fed to every passage. The
    `tf.while_loop` stops once every answer has emitted `end_id` (or
    `padding_id`); finished answers continue with `padding_id` at no cost, as
    in `beam_search`, whose greedy tokens and scores this reproduces.

    Args:
        first_step: callable `state` → `(logits, state)`: the first answer
            token's logits `(batch * num_docs, vocab)` (passages of one
            question contiguous) and the generator's cache after it.
        next_step: callable `(tokens, t, state)` → `(logits, state)`:
            `tokens` int32 `(batch * num_docs,)` is answer token `t - 1`, the
            logits are those of answer token `t`.
        state: the generator's cache, a nest of tensors of fixed shapes.
        doc_log_probs: float32 `(batch, num_docs)`, `log P(z|x)`.
        end_id: int, the token that ends answers.
        max_length: int, generated tokens at most.
        padding_id: int, emitted after `end_id`.

    Returns:
        `(token_ids, scores)`: int32 `(batch, max_length)` and float32
        `(batch,)` summed marginal log-probabilities.

    Example:

    >>> table = tf.math.log([[0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    >>> first = lambda state: (tf.gather(table, [0, 0]), state)
    >>> after = lambda tokens, t, state: (tf.gather(table, tf.cast(tokens == 2, "int32")), state)
    >>> ids, _ = cached_rag_token_greedy_search(
    ...     first, after, (), tf.math.log([[0.5, 0.5]]), end_id=3, max_length=4, padding_id=0)
    >>> ids.numpy().tolist()
    [[2, 3, 0, 0]]
    """
    max_length = check_integer("max_length", max_length)
    doc_log_probs = tf.cast(doc_log_probs, "float32")
    batch_size = tf.shape(doc_log_probs)[0]
    num_docs = tf.shape(doc_log_probs)[1]

    def choose(logits, finished):
        vocabulary_size = tf.shape(logits)[-1]
        per_doc = tf.nn.log_softmax(tf.cast(logits, "float32"), axis=-1)
        per_doc = tf.reshape(per_doc, [batch_size, num_docs, vocabulary_size])
        marginal = tf.reduce_logsumexp(doc_log_probs[:, :, None] + per_doc, axis=1)
        pad_only = tf.one_hot(padding_id, vocabulary_size, on_value=0.0,
                              off_value=NEGATIVE_LOG_PROB)
        marginal = tf.where(finished[:, None], pad_only[None, :], marginal)
        token = tf.argmax(marginal, axis=-1, output_type="int32")
        done = finished | tf.equal(token, end_id) | tf.equal(token, padding_id)
        return token, tf.gather(marginal, token, batch_dims=1), done

    positions = tf.range(max_length)
    logits, state = first_step(state)
    token, score, finished = choose(logits, tf.zeros([batch_size], "bool"))
    ids = tf.where(tf.equal(positions, 0)[None, :], token[:, None], padding_id)

    def step(t, ids, state, token, scores, finished):
        logits, state = next_step(tf.repeat(token, num_docs), t, state)
        token, score, finished = choose(logits, finished)
        ids = tf.where(tf.equal(positions, t)[None, :], token[:, None], ids)
        return t + 1, ids, state, token, scores + score, finished

    def not_done(t, ids, state, token, scores, finished):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    _, ids, _, _, scores, _ = tf.while_loop(
        not_done,
        step,
        (tf.constant(1, "int32"), ids, state, token, score, finished),
        maximum_iterations=max_length - 1,
    )
    return ids, scores
