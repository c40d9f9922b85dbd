"""Deterministic fusion of a dense and a lexical candidate list, in the graph."""

import tensorflow as tf

FUSIONS = ("weighted", "rrf")


def fuse_candidates(
    rows,
    valid,
    dense_scores,
    lexical_scores,
    list_length,
    k,
    fusion="weighted",
    lexical_weight=1.0,
    rrf_constant=60.0,
):
    """Ranks the union of two candidate lists and returns the best `k`.

    The candidates of each query are two lists side by side: positions
    `0..list_length-1` are the dense list and the rest the lexical list,
    each in its own rank order (best first). A passage row may be in both;
    it counts once. Fused score of a passage:

    - `"weighted"`: `dense_score + lexical_weight * lexical_score` (both
      exact for every candidate, whichever list brought it in);
    - `"rrf"` (reciprocal-rank fusion): `sum over the lists holding it of
      1 / (rrf_constant + rank)`, with ranks from 1.

    The order is deterministic: by fused score, descending, equal scores by
    the lower passage row. Invalid candidates (`valid` False: a missing FAISS
    result, a lexical candidate without a shared term) never count.

    Args:
        rows: int32 `(batch, C)` candidate passage rows.
        valid: bool `(batch, C)`.
        dense_scores: float32 `(batch, C)` inner products of each candidate.
        lexical_scores: float32 `(batch, C)` lexical scores of each candidate.
        list_length: int, length of the dense list (the first positions).
        k: int, results per query; more than the distinct valid
            candidates leaves masked slots.
        fusion: `"weighted"` or `"rrf"`.
        lexical_weight: float or scalar tensor (weighted fusion).
        rrf_constant: float, the `rrf_constant` above (60 in the RRF paper).

    Returns:
        `(positions, mask)`: int32 `(batch, k)` indices into the candidate
        axis (0 where `mask` is False) and bool `(batch, k)`.

    Example:

    >>> import tensorflow as tf
    >>> rows = tf.constant([[4, 7, 7, 2]])  # dense [4, 7], lexical [7, 2]
    >>> valid = tf.constant([[True, True, True, True]])
    >>> dense = tf.constant([[0.9, 0.8, 0.8, 0.1]])
    >>> lexical = tf.constant([[0.0, 0.5, 0.5, 0.4]])
    >>> positions, mask = fuse_candidates(rows, valid, dense, lexical, 2, 3)
    >>> tf.gather(rows, positions, batch_dims=1).numpy().tolist()
    [[7, 4, 2]]
    >>> positions, _ = fuse_candidates(rows, valid, dense, lexical, 2, 3, "rrf")
    >>> tf.gather(rows, positions, batch_dims=1).numpy().tolist()
    [[7, 4, 2]]
    """
    check_fusion(fusion)
    num_candidates = rows.shape[-1]
    same_row = tf.logical_and(
        tf.equal(rows[:, :, None], rows[:, None, :]),
        tf.logical_and(valid[:, :, None], valid[:, None, :]),
    )
    earlier = tf.linalg.band_part(tf.ones([num_candidates] * 2, tf.bool), -1, 0)
    earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(num_candidates, dtype=tf.bool)))
    duplicate = tf.reduce_any(tf.logical_and(same_row, earlier[None]), axis=2)
    first = tf.logical_and(valid, tf.logical_not(duplicate))
    if fusion == "weighted":
        lexical_weight = tf.cast(lexical_weight, dense_scores.dtype)
        fused = dense_scores + lexical_weight * lexical_scores
    else:
        positions = tf.range(num_candidates)
        ranks = tf.where(positions < list_length, positions, positions - list_length) + 1
        contributions = 1.0 / (rrf_constant + tf.cast(ranks, tf.float32))
        contributions = tf.where(valid, contributions[None], 0.0)
        fused = tf.reduce_sum(tf.cast(same_row, tf.float32) * contributions[:, None, :], 2)
    fused = tf.where(first, tf.cast(fused, tf.float32), -float("inf"))
    # Rows ascending first, then a stable sort by score: ties keep row order.
    by_row = tf.argsort(rows, stable=True)
    order = tf.argsort(
        tf.gather(fused, by_row, batch_dims=1), direction="DESCENDING", stable=True
    )
    found = min(k, num_candidates)
    positions = tf.gather(by_row, order[:, :found], batch_dims=1)
    mask = tf.gather(first, positions, batch_dims=1)
    if found < k:
        padding = [[0, 0], [0, k - found]]
        positions = tf.pad(positions, padding)
        mask = tf.pad(mask, padding, constant_values=False)
    return tf.where(mask, positions, 0), mask


def check_fusion(fusion):
    if fusion not in FUSIONS:
        raise ValueError(f"`fusion` must be one of {FUSIONS}. Received: fusion={fusion!r}")
