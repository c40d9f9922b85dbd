import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.retrieval import fuse_candidates


def reference_fusion(rows, valid, dense, lexical, list_length, k, fusion, weight, constant):
    """Plain Python: fused score per distinct valid row, sorted by
    (score descending, row ascending)."""
    results = []
    for b in range(len(rows)):
        scores = {}
        for position, (row, ok) in enumerate(zip(rows[b], valid[b])):
            if not ok:
                continue
            if fusion == "weighted":
                scores[row] = float(dense[b, position]) + weight * float(lexical[b, position])
            else:
                rank = position + 1 if position < list_length else position - list_length + 1
                scores[row] = scores.get(row, 0.0) + 1.0 / (constant + rank)
        ranked = sorted(scores, key=lambda row: (-scores[row], row))[:k]
        results.append(ranked + [None] * (k - len(ranked)))
    return results


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_matches_a_python_reference_with_duplicates_and_ties(fusion):
    rng = np.random.default_rng(0)
    batch, list_length, num_passages, k = 64, 6, 10, 5
    rows = rng.integers(0, num_passages, (batch, 2 * list_length)).astype("int32")
    # Scores on a coarse grid, so that equal fused scores are frequent; a row
    # listed twice has one dense and one lexical score.
    dense_table = rng.integers(0, 4, (batch, num_passages)) / 4
    lexical_table = rng.integers(0, 3, (batch, num_passages)) / 2
    dense = np.take_along_axis(dense_table, rows, 1).astype("float32")
    lexical = np.take_along_axis(lexical_table, rows, 1).astype("float32")
    valid = rng.random((batch, 2 * list_length)) > 0.2
    positions, mask = fuse_candidates(
        tf.constant(rows), tf.constant(valid), tf.constant(dense), tf.constant(lexical),
        list_length, k, fusion=fusion, lexical_weight=0.5, rrf_constant=2.0,
    )
    found = np.where(mask, np.take_along_axis(rows, positions.numpy(), 1), -1)
    expected = reference_fusion(rows, valid, dense, lexical, list_length, k, fusion, 0.5, 2.0)
    expected = np.array([[-1 if r is None else r for r in e] for e in expected])
    np.testing.assert_array_equal(found, expected)
    assert np.all(positions.numpy()[~mask.numpy()] == 0)


def test_too_few_candidates_leave_masked_slots():
    positions, mask = fuse_candidates(
        tf.constant([[3, 3]]), tf.constant([[True, True]]), tf.constant([[0.5, 0.5]]),
        tf.constant([[0.1, 0.1]]), 1, 3,
    )
    assert positions.numpy().tolist() == [[0, 0, 0]]
    assert mask.numpy().tolist() == [[True, False, False]]


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="Received: fusion='max'"):
        fuse_candidates(
            tf.constant([[0]]), tf.constant([[True]]), tf.constant([[0.0]]),
            tf.constant([[0.0]]), 1, 1, fusion="max",
        )
