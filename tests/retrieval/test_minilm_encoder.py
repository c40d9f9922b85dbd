import os

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

from keras_ragkd.retrieval import MiniLMEncoder
from keras_ragkd.text import minilm_preset_path


def numpy_minilm(sentences):
    """sentence-transformers' all-MiniLM-L6-v2 in plain NumPy.

    Hugging Face tokenizer + the safetensors weights + BERT forward pass +
    mean pooling + L2 norm: a reference independent of Keras and keras-hub.
    """
    folder = minilm_preset_path()
    weights = load_file(os.path.join(folder, "model.safetensors"))
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer.no_padding()

    def dense(x, name):
        return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]

    def layer_norm(x, name):
        mean = x.mean(-1, keepdims=True)
        variance = x.var(-1, keepdims=True)
        normed = (x - mean) / np.sqrt(variance + 1e-12)
        return normed * weights[f"{name}.weight"] + weights[f"{name}.bias"]

    vectors = []
    for sentence in sentences:
        ids = np.array(tokenizer.encode(sentence).ids)
        x = (
            weights["embeddings.word_embeddings.weight"][ids]
            + weights["embeddings.position_embeddings.weight"][: len(ids)]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        x = layer_norm(x, "embeddings.LayerNorm")
        for i in range(6):
            prefix = f"encoder.layer.{i}"
            heads = [
                dense(x, f"{prefix}.attention.self.{part}").reshape(len(ids), 12, 32)
                for part in ("query", "key", "value")
            ]
            query, key, value = (h.transpose(1, 0, 2) for h in heads)
            logits = query @ key.transpose(0, 2, 1) / np.sqrt(32.0)
            attention = np.exp(logits - logits.max(-1, keepdims=True))
            attention /= attention.sum(-1, keepdims=True)
            context = (attention @ value).transpose(1, 0, 2).reshape(len(ids), 384)
            x = layer_norm(
                x + dense(context, f"{prefix}.attention.output.dense"),
                f"{prefix}.attention.output.LayerNorm",
            )
            hidden = dense(x, f"{prefix}.intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
            x = layer_norm(
                x + dense(hidden, f"{prefix}.output.dense"),
                f"{prefix}.output.LayerNorm",
            )
        pooled = x.mean(0)
        vectors.append(pooled / np.linalg.norm(pooled))
    return np.stack(vectors)


def test_embeddings_match_numpy_reference(minilm_encoder):
    sentences = ["This is an example sentence", "Each sentence is converted"]
    vectors = minilm_encoder.encode(sentences)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, numpy_minilm(sentences), atol=2e-5)


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
