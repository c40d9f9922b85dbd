"""Greedy and beam search over a next-token log-probability function."""

import tensorflow as tf

from keras_ragkd.rag.marginalization import NEGATIVE_LOG_PROB


def beam_search(next_log_probs, batch_size, vocabulary_size, start_id, end_id,
                max_length, num_beams=1, padding_id=0):
    """Beam search (greedy when `num_beams=1`) for `max_length` steps.

    Finished beams (that emitted `end_id`) continue with `padding_id` at no
    cost; once every beam has finished, the remaining steps skip
    `next_log_probs` (early stop). The loop is unrolled, so wrap calls in a
    `tf.function` to compile them once.

    Args:
        next_log_probs: callable mapping decoder ids `(batch * num_beams, t)`
            (beams of one example are contiguous) to the next token's
            log-probabilities `(batch * num_beams, vocabulary_size)`.
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
    >>> table = np.log(np.array([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]))
    >>> def next_log_probs(ids):
    ...     return tf.gather(table, tf.cast(ids[:, -1] == 2, "int32"))
    >>> ids, _ = beam_search(next_log_probs, 1, 4, start_id=1, end_id=3,
    ...                      max_length=2)
    >>> ids.numpy().tolist()
    [[[2, 0]]]
    """
    if num_beams < 1 or max_length < 1:
        raise ValueError(
            "`num_beams` and `max_length` must be positive integers. "
            f"Received: num_beams={num_beams}, max_length={max_length}"
        )
    rows = batch_size * num_beams
    ids = tf.fill([rows, 1], tf.constant(start_id, "int32"))
    first_beam_only = tf.one_hot(0, num_beams, on_value=0.0, off_value=NEGATIVE_LOG_PROB)
    scores = tf.tile(first_beam_only[None, :], [batch_size, 1])
    finished = tf.zeros([rows], "bool")
    pad_only = tf.one_hot(padding_id, vocabulary_size, on_value=0.0, off_value=NEGATIVE_LOG_PROB)

    def step(ids, scores, finished):
        log_probs = tf.cast(next_log_probs(ids), "float32")
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
            tf.reshape(ids, [batch_size, num_beams, -1]), parent, batch_dims=1
        )
        ids = tf.reshape(
            tf.concat([previous, token[:, :, None]], axis=-1), [rows, -1]
        )
        was_finished = tf.gather(
            tf.reshape(finished, [batch_size, num_beams]), parent, batch_dims=1
        )
        finished = tf.reshape(
            was_finished | tf.equal(token, end_id) | tf.equal(token, padding_id), [rows]
        )
        return ids, scores, finished

    def pad(ids, scores, finished):
        return tf.pad(ids, [[0, 0], [0, 1]], constant_values=padding_id), scores, finished

    for _ in range(max_length):
        # Once every beam has ended, the remaining steps only pad.
        ids, scores, finished = tf.cond(
            tf.reduce_all(finished),
            lambda: pad(ids, scores, finished),
            lambda: step(ids, scores, finished),
        )
    token_ids = tf.reshape(ids[:, 1:], [batch_size, num_beams, max_length])
    return token_ids, scores
