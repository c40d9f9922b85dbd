import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval.top_k import blockwise_top_k
from keras_ragkd.retrieval.top_k import default_block_size


def tied_scores(batch, num_columns, seed=0):
    """Scores with many exact ties (values on a coarse grid)."""
    rng = np.random.default_rng(seed)
    return tf.constant(np.round(rng.standard_normal((batch, num_columns)), 1), "float32")


@pytest.mark.parametrize(
    "num_columns, k, block_size",
    [(5000, 10, None), (5003, 1, None), (4099, 7, 16), (977, 5, 8), (30, 10, None)],
)
def test_matches_tf_top_k_including_ties(num_columns, k, block_size):
    scores = tied_scores(16, num_columns)
    values, indices = blockwise_top_k(scores, k, block_size)
    expected = tf.math.top_k(scores, k)
    np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    assert indices.dtype == tf.int32 and indices.shape == (16, k)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_matches_in_compiled_function_with_unknown_batch(jit_compile):
    scores = tied_scores(5, 20_011, seed=1)
    function = tf.function(
        lambda s: blockwise_top_k(s, 10)[1],
        input_signature=[tf.TensorSpec([None, 20_011], tf.float32)],
        jit_compile=jit_compile,
    )
    np.testing.assert_array_equal(
        function(scores).numpy(), tf.math.top_k(scores, 10).indices.numpy()
    )


def test_default_block_size_is_a_multiple_of_8():
    assert default_block_size(100_000, 10) == 96
    assert default_block_size(50, 10) == 8


def test_tensor_backend_matches_faiss_flat_on_a_large_index():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_003, 32)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = PassageIndex.from_embeddings(
        [{"id": str(i), "text": ""} for i in range(len(vectors))], vectors
    )
    queries = vectors[:64] + 0.1 * rng.standard_normal((64, 32)).astype("float32")
    outputs = PassageRetriever(index, k=10, backend="tensor")(queries)
    np.testing.assert_array_equal(outputs["rows"].numpy(), index.search(queries, 10).rows)
