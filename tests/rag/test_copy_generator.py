import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import CopyTransformerGenerator
from keras_ragkd.rag import scatter_copy_probs
from keras_ragkd.rag.decoding import beam_search
from keras_ragkd.rag.preprocessor import START_ID as START


def test_scatter_copy_probs_matches_dense_one_hot():
    rng = np.random.default_rng(0)
    probs = rng.random((2, 3, 5)).astype("float32")
    probs /= probs.sum(-1, keepdims=True)
    ids = rng.integers(0, 7, size=(2, 5))
    expected = np.einsum("bts,bsv->btv", probs, np.eye(7)[ids])
    np.testing.assert_allclose(scatter_copy_probs(probs, ids, 7).numpy(), expected, atol=1e-6)


def _generator():
    keras.utils.set_random_seed(1)
    return CopyTransformerGenerator(
        30, hidden_dim=16, num_heads=2, intermediate_dim=32, max_sequence_length=12, dropout=0.0
    )


def test_outputs_are_normalised_log_probs_and_config_round_trips():
    generator = _generator()
    inputs = {
        "encoder_token_ids": np.array([[5, 6, 7, 0], [8, 9, 0, 0]]),
        "decoder_token_ids": np.array([[2, 6, 0], [2, 9, 4]]),
    }
    log_probs = generator(inputs).numpy()
    assert log_probs.shape == (2, 3, 30)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    restored = CopyTransformerGenerator.from_config(generator.get_config())
    restored.set_weights(generator.get_weights())
    np.testing.assert_allclose(restored(inputs).numpy(), log_probs, atol=1e-5)


def test_copy_learns_to_emit_tokens_never_seen_as_targets():
    # Task: output the source token at position 1. Targets use ids 10..19 in
    # training; at test time the source holds ids 20..29, never targets.
    generator = _generator()
    rng = np.random.default_rng(0)

    def batch(low, high, size=64):
        sources = rng.integers(3, 30, size=(size, 4))
        sources[:, 1] = rng.integers(low, high, size=size)
        decoder = np.stack([np.full(size, 2), sources[:, 1]], axis=1)
        return sources, decoder

    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def train_step(sources, decoder):
        with tf.GradientTape() as tape:
            log_probs = generator(
                {"encoder_token_ids": sources, "decoder_token_ids": decoder[:, :1]},
                training=True,
            )
            loss = -tf.reduce_mean(tf.gather(log_probs[:, 0], decoder[:, 1], batch_dims=1))
        variables = generator.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(80):
        train_step(*batch(10, 20))
    sources, decoder = batch(20, 30)
    log_probs = generator({"encoder_token_ids": sources, "decoder_token_ids": decoder[:, :1]})
    accuracy = np.mean(log_probs.numpy()[:, 0].argmax(-1) == sources[:, 1])
    assert accuracy > 0.8


def test_constructor_validation():
    with pytest.raises(ValueError, match="Received: hidden_dim=0"):
        CopyTransformerGenerator(10, hidden_dim=0)


def _uncached_greedy(generator, encoded, doc_log_probs, end_id, max_length):
    """Greedy RAG-Token `beam_search` over `decode`, recomputing the whole buffer."""
    batch, num_docs = doc_log_probs.shape
    vocabulary_size = generator.vocabulary_size

    def next_log_probs(ids, position):
        per_doc = tf.nn.log_softmax(generator.decode(encoded, tf.repeat(ids, num_docs, 0)))
        per_doc = tf.reshape(tf.gather(per_doc, position, axis=1), [-1, num_docs, vocabulary_size])
        return tf.reduce_logsumexp(doc_log_probs[:, :, None] + per_doc, axis=1)

    return beam_search(next_log_probs, batch, vocabulary_size, START, end_id,
                       max_length)


@pytest.mark.parametrize("num_decoder_layers", [1, 2])
def test_cached_greedy_search_matches_recomputing_every_step(num_decoder_layers):
    keras.utils.set_random_seed(1)
    generator = CopyTransformerGenerator(
        30, hidden_dim=16, num_heads=2, intermediate_dim=32, max_sequence_length=12,
        num_decoder_layers=num_decoder_layers, dropout=0.0,
    )
    rng = np.random.default_rng(0)
    batch, num_docs, max_length = 3, 2, 8
    sources = rng.integers(4, 30, size=(batch * num_docs, 9))
    sources[:, -2:] = 0
    # Repeated source tokens exercise the copy continuation.
    sources[:, 4] = sources[:, 1]
    encoded = generator.encode(sources)
    doc_log_probs = tf.nn.log_softmax(rng.normal(size=(batch, num_docs)).astype("float32"))
    ids, scores = generator.rag_token_greedy_search(encoded, doc_log_probs, START, -1, max_length)
    expected, expected_scores = _uncached_greedy(generator, encoded, doc_log_probs, -1, max_length)
    np.testing.assert_array_equal(ids.numpy(), expected.numpy()[:, 0])
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy()[:, 0], rtol=1e-5)
    # Ending early: a token greedy decoding emits mid-answer becomes the end.
    end_id = int(ids.numpy()[0, 2])
    ids, scores = generator.rag_token_greedy_search(encoded, doc_log_probs, START, end_id, max_length)
    expected, expected_scores = _uncached_greedy(
        generator, encoded, doc_log_probs, end_id, max_length
    )
    np.testing.assert_array_equal(ids.numpy(), expected.numpy()[:, 0])
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy()[:, 0], rtol=1e-5)
    assert (ids.numpy()[0, 3:] == 0).all()


def test_copy_continues_from_the_position_it_copied_from():
    """Token 7 occurs at positions 0 and 3; step 0 copied it from position 3,
    so step 1 continues at position 4, not at 1."""
    generator = _generator()
    generator.continuation_bonus.assign(20.0)
    scores = np.zeros((1, 2, 6), "float32")
    scores[0, 0, 3] = 10.0
    source = np.array([7, 5, 6, 7, 8, 9])
    matches = np.zeros((1, 2, 6), "float32")
    matches[0, 1] = source == 7  # The decoder input at step 1 is token 7.
    probs, continuations = generator._copy_with_continuation(scores, matches)
    assert np.argmax(probs[0, 0]) == 3
    assert np.argmax(probs[0, 1]) == 4
    assert continuations.numpy()[0, 1, 4] > 0.99
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, atol=1e-5)
