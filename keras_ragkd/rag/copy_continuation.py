"""Copy continuation: a pointer that keeps copying where it copied from.

A pointer head that copies a multi-token span ("ĠWillem" "stad") must find,
at every step, the position after the one it copied last. Content attention
alone loses its place in a small model ("Willemstadstad", "Ngerul"). The
continuation makes the place explicit: if decoder input `y_t` was copied
from source position `s` at step `t - 1` (probability `copy_probs[t-1, s]`
times `[source[s] == y_t]`), position `s + 1` gets `bonus · c_t[s + 1]`
added to its copy score at step `t`. Shared by `CopyTransformerGenerator`
and the causal-LM `CopyHead`.

Coverage (See et al., 2017, as a score penalty) is the other half: with a
`coverage_penalty` `w`, `w · Σ_{t' < t} copy_probs[t', s]` is subtracted
from position `s`'s score at step `t`, so a span that has been copied is not
copied again ("Conakryry", "Island Island Island").
"""

import tensorflow as tf


def source_matches(token_ids, source_ids, source_mask):
    """Float32 `(batch, time, source)`: copyable source tokens equal to `y_t`.

    Args:
        token_ids: int `(batch, time)`, the decoder inputs `y_t`.
        source_ids: int `(batch, source)`, the tokens copying can emit.
        source_mask: bool `(batch, source)`, the positions that can be copied.

    Returns:
        float32 `(batch, time, source)` of 0/1.

    Example:

    >>> import numpy as np
    >>> source_matches(np.array([[7, 8]]), np.array([[7, 8, 7]]),
    ...                np.array([[True, True, False]])).numpy().tolist()
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]
    """
    matches = tf.logical_and(
        tf.equal(tf.cast(token_ids, "int32")[:, :, None],
                 tf.cast(source_ids, "int32")[:, None, :]),
        tf.cast(source_mask, "bool")[:, None, :],
    )
    return tf.cast(matches, "float32")


def continue_copy(previous_probs, scores, matched, bonus, coverage=None,
                  coverage_penalty=None):
    """One step: `(copy_probs, continuation)`, both float32 `(batch, source)`.

    Args:
        previous_probs: float32 `(batch, source)`, the previous step's copy
            distribution (zeros at the first step).
        scores: float32 `(batch, source)`, this step's masked copy scores.
        matched: float32 `(batch, source)`, `source_matches` of this step's
            decoder input.
        bonus: scalar, added to the score of the continuation position.
        coverage: float32 `(batch, source)`, the copy distributions of the
            steps before summed (needed with `coverage_penalty`).
        coverage_penalty: `None` (no coverage) or a scalar `w`:
            `w · coverage` is subtracted from the scores.

    Example:

    >>> import numpy as np
    >>> probs, continuation = continue_copy(
    ...     np.array([[1.0, 0.0, 0.0]], "float32"), np.zeros((1, 3), "float32"),
    ...     np.array([[1.0, 0.0, 0.0]], "float32"), 20.0)
    >>> continuation.numpy().tolist(), int(np.argmax(probs.numpy()))
    ([[0.0, 1.0, 0.0]], 1)
    """
    copied_from = previous_probs * matched
    continuation = tf.pad(copied_from[:, :-1], [[0, 0], [1, 0]])
    scores = scores + tf.cast(bonus, scores.dtype) * continuation
    if coverage_penalty is not None:
        scores = scores - tf.cast(coverage_penalty, scores.dtype) * coverage
    return tf.nn.softmax(scores, axis=-1), continuation


def copy_with_continuation(scores, matches, bonus, coverage_penalty=None):
    """`continue_copy` over a teacher-forced sequence (a scan over time).

    Args:
        scores: float32 `(batch, time, source)`, masked copy scores.
        matches: float32 `(batch, time, source)`, `source_matches` of the
            decoder inputs.
        bonus: scalar continuation bonus.
        coverage_penalty: `None` or the scalar coverage weight (see
            `continue_copy`); the coverage starts at zero.

    Returns:
        `(copy_probs, continuations)`, both float32 `(batch, time, source)`.

    Example:

    >>> import numpy as np
    >>> probs, _ = copy_with_continuation(
    ...     np.array([[[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], "float32"),
    ...     np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], "float32"), 20.0)
    >>> np.argmax(probs.numpy(), axis=-1).tolist()
    [[0, 1]]
    """

    def step(previous, elements):
        previous_probs, _, coverage = previous
        probs, continuation = continue_copy(previous_probs, *elements, bonus, coverage,
                                            coverage_penalty)
        return probs, continuation, coverage + probs

    time_major = [tf.transpose(tf.cast(t, "float32"), [1, 0, 2]) for t in (scores, matches)]
    zeros = tf.zeros_like(time_major[0][0])
    probs, continuations, _ = tf.scan(step, tuple(time_major),
                                      initializer=(zeros, zeros, zeros))
    return tf.transpose(probs, [1, 0, 2]), tf.transpose(continuations, [1, 0, 2])
