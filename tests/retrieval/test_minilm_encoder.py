import keras
import numpy as np
import pytest

from keras_ragkd.retrieval import MiniLMEncoder


def test_cosine_similarities_match_published_values(minilm_encoder):
    # sbert.net "Usage" page, all-MiniLM-L6-v2: similarities of these sentences
    # are 0.6660 (1, 2), 0.1046 (1, 3) and 0.1411 (2, 3).
    vectors = minilm_encoder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    similarities = vectors @ vectors.T
    np.testing.assert_allclose(np.diag(similarities), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        [similarities[0, 1], similarities[0, 2], similarities[1, 2]],
        [0.6660, 0.1046, 0.1411],
        atol=1e-3,
    )


def test_padding_does_not_change_embeddings(minilm_encoder):
    short, long = "Paris.", "The capital of France is Paris, on the Seine."
    alone = minilm_encoder.encode([short])
    batched = minilm_encoder.encode([short, long])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)


def test_identity_names_model_length_and_weights(minilm_encoder):
    identity = minilm_encoder.identity
    assert identity.startswith("all-MiniLM-L6-v2/seq64/")
    assert identity == minilm_encoder.identity
    assert minilm_encoder.dim == 384


@pytest.mark.slow
def test_keras_file_round_trip_keeps_weights(tmp_path):
    encoder = MiniLMEncoder(sequence_length=16)
    kernel = encoder.backbone.get_layer("pooled_dense").kernel
    kernel.assign(kernel * 0.5)  # differs from the preset: must come from the file
    encoder.backbone.token_embedding.embeddings.assign(
        encoder.backbone.token_embedding.embeddings * 1.01
    )
    texts = ["The currency of Japan is JPY."]
    expected = encoder.encode(texts)
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, MiniLMEncoder)
    assert reloaded.get_config()["sequence_length"] == 16
    np.testing.assert_allclose(reloaded.encode(texts), expected, atol=1e-6)
    assert reloaded.identity == encoder.identity


@pytest.mark.parametrize("sequence_length", [2, "64", None])
def test_bad_sequence_length_is_refused(sequence_length):
    with pytest.raises(ValueError, match="Received: sequence_length="):
        MiniLMEncoder(sequence_length=sequence_length)


def test_bad_texts_are_refused(minilm_encoder):
    with pytest.raises(TypeError, match="Received: text=3"):
        minilm_encoder.encode(["fine", 3])
    with pytest.raises(TypeError, match="Received: texts="):
        minilm_encoder.encode("a single string")
    with pytest.raises(ValueError, match="Received: texts=\\[\\]"):
        minilm_encoder.encode([])
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        minilm_encoder.encode(["a"], batch_size=0)


def test_string_layers_keep_keras_from_auto_xla(minilm_encoder):
    # jit_compile="auto" enables XLA only when every layer supports it.
    assert minilm_encoder.tokenizer.supports_jit is False
    assert not all(layer.supports_jit for layer in minilm_encoder._flatten_layers())


def test_frozen_encoder_stays_frozen_through_its_config():
    frozen = MiniLMEncoder(sequence_length=8)
    frozen.trainable = False
    restored = MiniLMEncoder.from_config(frozen.get_config())
    assert restored.trainable is False
    assert restored.backbone.trainable is False
    assert all(not v.trainable for v in restored.weights)
