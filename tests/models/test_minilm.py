"""all-MiniLM-L6-v2 from `keras_ragkd.models`: preset, tokenizer, backbone, embedder."""

import os

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

from keras_ragkd.models import MiniLMEmbedder
from keras_ragkd.models import load_minilm_backbone
from keras_ragkd.models import load_minilm_tokenizer
from keras_ragkd.models import minilm_preset_path

SENTENCES = [
    "This is an example sentence",
    "What is the capital of Côte d'Ivoire?",
    "Kabul is the capital of which country?",
]
# Where keras-hub's own BertTokenizer glued words into [UNK] (cosine 0.76
# and 0.42 to the reference before this tokenizer).
NO_BREAK_SPACES = [
    "Paris\u00a0is the capital of France.",
    "Bern\u00a0is\u00a0the\u00a0capital\u00a0of\u00a0Switzerland\u3000and Kyōto\u200b is in Japan.",
]


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


@pytest.fixture(scope="module")
def embedder():
    return MiniLMEmbedder(sequence_length=64, trainable=False)


def test_preset_folder_holds_the_weights():
    folder = minilm_preset_path()
    for name in ("vocab.txt", "config.json", "model.safetensors", "tokenizer.json"):
        assert os.path.isfile(os.path.join(folder, name))


def test_token_ids_match_hugging_face_tokenizer():
    tokenizer = load_minilm_tokenizer()
    reference = Tokenizer.from_file(os.path.join(minilm_preset_path(), "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    assert tokenizer.vocabulary_size() == 30522
    for sentence, ids in zip(SENTENCES + NO_BREAK_SPACES, tokenizer(SENTENCES + NO_BREAK_SPACES)):
        # The reference adds [CLS] ... [SEP]; the tokenizer does not.
        expected = reference.encode(sentence).ids
        assert [tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id] == expected


def test_fixed_sequence_length_pads_and_truncates():
    tokenizer = load_minilm_tokenizer(sequence_length=4)
    token_ids = np.asarray(tokenizer(["Paris", "The capital of France is Paris."]))
    assert token_ids.shape == (2, 4)
    assert token_ids[0, 1:].tolist() == [0, 0, 0]
    assert (token_ids[1] > 0).all()


@pytest.mark.parametrize("sequence_length", [0, -3, 2.5, True])
def test_bad_tokenizer_sequence_length_is_refused(sequence_length):
    with pytest.raises(ValueError, match="Received: sequence_length="):
        load_minilm_tokenizer(sequence_length=sequence_length)


def test_embeddings_match_numpy_reference(embedder):
    sentences = SENTENCES[:1] + NO_BREAK_SPACES
    vectors = embedder.predict_on_batch(tf.constant(sentences))
    reference = numpy_minilm(sentences)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() >= 0.99
    np.testing.assert_allclose(vectors, reference, atol=2e-5)


def test_backbone_uses_the_exact_gelu():
    backbone = load_minilm_backbone(trainable=False)
    x = tf.constant([-1.0, 0.5, 2.0])
    for layer in backbone.transformer_layers:
        dense = layer._feedforward_intermediate_dense
        np.testing.assert_allclose(
            dense.activation(x), 0.5 * x * (1.0 + erf(x.numpy() / np.sqrt(2.0))), atol=1e-6
        )
    assert backbone.trainable is False


def test_frozen_embedder_has_no_trainable_weights(embedder):
    assert embedder.trainable_weights == []
    assert embedder.dim == 384 and embedder.backbone.hidden_dim == 384
