import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import RagSequenceLoss
from keras_ragkd.rag import RetrievalAugmentedGenerator
from keras_ragkd.rag.preprocessor import END_ID
from keras_ragkd.rag.preprocessor import START_ID
from tests.rag.conftest import token_rag


def _batch(preprocessor, questions, size=4):
    chosen = questions[:: max(1, len(questions) // size)][:size]
    x, y = preprocessor(
        tf.constant([q["question"] for q in chosen]), tf.constant([q["answer"] for q in chosen])
    )
    return x, y


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _per_document_reference(rag, x):
    """Retrieval outputs and per-document generator log-probs, computed by hand."""
    query = rag.query_encoder(x["query"])
    retrieved = rag.retriever(query)
    k = rag.num_docs
    passage_ids = rag.passage_tokens.token_ids.numpy()[retrieved["rows"].numpy()[:, :k]]
    question_ids = x["question_token_ids"].numpy()
    batch = question_ids.shape[0]
    per_doc = np.zeros((batch, k, x["decoder_token_ids"].shape[1], rag.generator.vocabulary_size))
    for z in range(k):
        sources = np.concatenate([question_ids, passage_ids[:, z]], axis=1)
        copy_mask = np.concatenate(
            [np.zeros_like(question_ids, bool), passage_ids[:, z] != 0], axis=1
        )
        outputs = rag.generator(
            {
                "encoder_token_ids": sources,
                "decoder_token_ids": x["decoder_token_ids"],
                "copy_mask": copy_mask,
            }
        )
        per_doc[:, z] = _log_softmax(np.asarray(outputs, "float64"))
    scores = 5.0 * retrieved["doc_scores"].numpy()[:, :k].astype("float64")
    mask = retrieved["mask"].numpy()[:, :k]
    doc_probs = np.where(mask, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    return doc_probs / doc_probs.sum(-1, keepdims=True), per_doc


def test_rag_token_output_matches_numpy_marginal(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=3)
    x, _ = _batch(token_preprocessor, questions)
    doc_probs, per_doc = _per_document_reference(rag, x)
    expected = np.einsum("bk,bktv->btv", doc_probs, np.exp(per_doc))
    got = np.exp(rag(x).numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_rag_sequence_output_and_loss_match_numpy(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=3, marginalization="sequence")
    x, y = _batch(token_preprocessor, questions)
    doc_probs, per_doc = _per_document_reference(rag, x)
    outputs = rag(x)
    assert outputs.shape == per_doc.shape
    labels = y.numpy()
    valid = labels != 0
    likelihood = np.zeros(labels.shape[0])
    for b in range(labels.shape[0]):
        for z in range(3):
            steps = np.nonzero(valid[b])[0]
            seq = per_doc[b, z, steps, labels[b, steps]].sum()
            likelihood[b] += doc_probs[b, z] * np.exp(seq)
    expected = -np.log(likelihood).mean()
    np.testing.assert_allclose(float(RagSequenceLoss()(y, outputs)), expected, rtol=1e-4)


def test_invalid_retrievals_are_masked_out(kb, token_preprocessor):
    passages, questions = kb
    two = passages[:2]
    rag = token_rag(token_preprocessor, two, num_docs=3)
    x, _ = _batch(token_preprocessor, questions)
    retrieved = rag.retrieve(x)
    assert retrieved["mask"].numpy()[:, :2].all() and not retrieved["mask"].numpy()[:, 2].any()
    probs = np.exp(retrieved["doc_log_probs"].numpy())
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert np.all(probs[:, 2] == 0.0)
    doc_probs, per_doc = _per_document_reference(rag, x)
    expected = np.einsum("bk,bktv->btv", doc_probs, np.exp(per_doc))
    np.testing.assert_allclose(np.exp(rag(x).numpy()), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("marginalization", ["token", "sequence"])
def test_gradient_reaches_query_encoder(kb, token_preprocessor, marginalization):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=3, marginalization=marginalization)
    x, y = _batch(token_preprocessor, questions)
    loss_fn = RagSequenceLoss() if marginalization == "sequence" else None
    with tf.GradientTape() as tape:
        outputs = rag(x, training=True)
        if loss_fn is None:
            picked = tf.gather(outputs, tf.cast(y, "int32"), axis=-1, batch_dims=2)
            loss = -tf.reduce_sum(picked * tf.cast(y != 0, "float32"))
        else:
            loss = loss_fn(y, outputs)
    weights = rag.query_encoder.trainable_weights + [rag.log_doc_score_scale]
    gradients = tape.gradient(loss, weights)
    for weight, gradient in zip(weights, gradients):
        assert gradient is not None, weight.path
        assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy()))
    assert np.abs(tf.convert_to_tensor(gradients[0]).numpy()).sum() > 0


def test_faiss_and_tensor_backends_agree(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=3, backend="faiss")
    x, _ = _batch(token_preprocessor, questions)
    faiss_rows = rag.retrieve(x)["rows"].numpy()
    faiss_outputs = rag(x).numpy()
    rag.retriever.set_backend("tensor")
    np.testing.assert_array_equal(rag.retrieve(x)["rows"].numpy(), faiss_rows)
    np.testing.assert_allclose(rag(x).numpy(), faiss_outputs, atol=1e-5)


@pytest.mark.parametrize("marginalization", ["token", "sequence"])
def test_greedy_generation_is_consistent_with_call(kb, token_preprocessor, marginalization):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2, marginalization="token")
    x, _ = _batch(token_preprocessor, questions, size=3)
    ids, scores = rag.generate_token_ids(
        x, START_ID, END_ID, max_length=4, marginalization=marginalization
    )
    assert ids.shape == (3, 4)
    decoder = np.full((3, 1), START_ID)
    if marginalization == "token":
        # Greedy RAG-Token decoding: argmax of the marginal, step by step.
        for _ in range(4):
            step = rag(dict(x, decoder_token_ids=decoder)).numpy()[:, -1]
            decoder = np.concatenate([decoder, step.argmax(-1)[:, None]], axis=1)
        finished = np.cumsum(decoder[:, 1:] == END_ID, axis=1) - (decoder[:, 1:] == END_ID)
        expected = np.where(finished > 0, 0, decoder[:, 1:])
        np.testing.assert_array_equal(ids.numpy(), expected)
    # Returned scores are the log-likelihood of the returned ids: the sum of
    # per-token marginals (RAG-Token) or the sequence marginal (RAG-Sequence).
    labels = ids.numpy()
    decoder = np.concatenate([np.full((3, 1), START_ID), labels[:, :-1]], axis=1)
    inputs = dict(x, decoder_token_ids=decoder)
    if marginalization == "token":
        token = rag(inputs).numpy()
        picked = np.take_along_axis(token, labels[..., None], -1)[..., 0]
        valid = (labels != 0) | (np.arange(4) == 0)
        expected_scores = (picked * valid).sum(-1)
    else:
        rag.marginalization = "sequence"
        expected_scores = -RagSequenceLoss(reduction=None)(labels, rag(inputs)).numpy()
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-4)


def test_constructor_validation(kb, token_preprocessor):
    passages, _ = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2)
    with pytest.raises(ValueError, match="Received: marginalization='both'"):
        RetrievalAugmentedGenerator(
            rag.query_encoder, rag.retriever, rag.generator, rag.passage_tokens, num_docs=2,
            marginalization="both",
        )
    with pytest.raises(ValueError, match="Received: num_docs=5"):
        RetrievalAugmentedGenerator(
            rag.query_encoder, rag.retriever, rag.generator, rag.passage_tokens, num_docs=5
        )
    for scale in (0.0, -1.0, float("inf"), True, "10"):
        with pytest.raises(ValueError, match=f"Received: doc_score_scale={scale!r}"):
            RetrievalAugmentedGenerator(
                rag.query_encoder, rag.retriever, rag.generator, rag.passage_tokens,
                num_docs=2, doc_score_scale=scale,
            )
    with pytest.raises(ValueError, match="Received: passage_tokens=None"):
        RetrievalAugmentedGenerator(rag.query_encoder, rag.retriever, rag.generator, num_docs=2)
    with pytest.raises(ValueError, match="Received: passage_tokens.num_passages=2"):
        RetrievalAugmentedGenerator(
            rag.query_encoder, rag.retriever, rag.generator,
            passage_tokens=rag.passage_tokens.token_ids.numpy()[:2], num_docs=2,
        )
    with pytest.raises(ValueError, match="Received: passage_token_ids.shape=\\(3,\\)"):
        RetrievalAugmentedGenerator(
            rag.query_encoder, rag.retriever, rag.generator, passage_tokens=[1, 2, 3],
            num_docs=2,
        )


def test_doc_score_scale_is_learned_in_log_space(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=3)
    x, _ = _batch(token_preprocessor, questions)
    assert rag.log_doc_score_scale.trainable
    np.testing.assert_allclose(rag.doc_score_scale.numpy(), 5.0, rtol=1e-6)
    rag.log_doc_score_scale.assign(np.log(40.0))
    retrieved = rag.retrieve(x)
    scores = 40.0 * retrieved["doc_scores"].numpy().astype("float64")
    np.testing.assert_allclose(
        retrieved["doc_log_probs"].numpy(), _log_softmax(scores), atol=1e-5
    )
    # One Adam step moves the scale by a factor of about exp(learning rate),
    # not by the learning rate: a relative change.
    optimizer = keras.optimizers.Adam(0.1)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(rag.retrieve(x)["doc_log_probs"][:, 0])
    optimizer.apply_gradients(
        [(tape.gradient(loss, rag.log_doc_score_scale), rag.log_doc_score_scale)]
    )
    np.testing.assert_allclose(
        abs(np.log(rag.doc_score_scale.numpy() / 40.0)), 0.1, rtol=1e-2
    )
    frozen = RetrievalAugmentedGenerator(
        rag.query_encoder, rag.retriever, rag.generator, rag.passage_tokens, num_docs=3,
        train_doc_score_scale=False,
    )
    assert not frozen.log_doc_score_scale.trainable
    assert frozen.log_doc_score_scale in frozen.non_trainable_weights


class _BagOfWordsGenerator(keras.layers.Layer):
    """A user generator without `encode`/`decode`: only the documented call."""

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocabulary_size, 8)
        self.output_layer = keras.layers.Dense(vocabulary_size)

    def call(self, inputs):
        source = tf.reduce_mean(self.embedding(inputs["encoder_token_ids"]), axis=1)
        hidden = self.embedding(inputs["decoder_token_ids"]) + source[:, None, :]
        return self.output_layer(hidden)


def test_any_generator_with_the_call_signature_works(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2)
    custom = RetrievalAugmentedGenerator(
        rag.query_encoder, rag.retriever, _BagOfWordsGenerator(token_preprocessor.vocabulary_size),
        rag.passage_tokens, num_docs=2,
    )
    x, _ = _batch(token_preprocessor, questions)
    log_probs = custom(x).numpy()
    assert log_probs.shape == (4, x["decoder_token_ids"].shape[1], token_preprocessor.vocabulary_size)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    ids, _ = custom.generate_token_ids(
        x, START_ID, END_ID, max_length=3, vocabulary_size=token_preprocessor.vocabulary_size
    )
    assert ids.shape == (4, 3)


def test_config_round_trip_and_files_with_the_plain_scale(kb, token_preprocessor, tmp_path):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2)
    rag.retriever.index.save(str(tmp_path / "index"))
    x, _ = _batch(token_preprocessor, questions)
    rag.log_doc_score_scale.assign(np.log(12.0))
    config = rag.get_config()
    restored = RetrievalAugmentedGenerator.from_config(config)
    # The config carries no weights: the passage token ids live in the
    # token table's weights, as the `.keras` file stores them.
    assert config["passage_tokens"]["config"]["num_passages"] == len(passages)
    restored(x)
    for part in ("query_encoder", "retriever", "generator", "passage_tokens"):
        getattr(restored, part).set_weights(getattr(rag, part).get_weights())
    restored.load_own_variables({"0": rag.log_doc_score_scale.numpy()})
    np.testing.assert_allclose(restored.doc_score_scale.numpy(), 12.0, rtol=1e-5)
    np.testing.assert_allclose(restored(x).numpy(), rag(x).numpy(), atol=1e-5)
    # A config without "scale_weight" comes from a file that stored the
    # scale itself: its weight is read as the scale, not its logarithm.
    del config["scale_weight"]
    legacy = RetrievalAugmentedGenerator.from_config(config)
    legacy.load_own_variables({"0": np.array(12.0, "float32")})
    np.testing.assert_allclose(legacy.doc_score_scale.numpy(), 12.0, rtol=1e-5)


def test_mixed_precision_keeps_the_scale_in_float32(kb, token_preprocessor):
    passages, questions = kb
    x, _ = _batch(token_preprocessor, questions)
    parts = token_rag(token_preprocessor, passages, num_docs=2)
    rag = RetrievalAugmentedGenerator(
        parts.query_encoder, parts.retriever, parts.generator, parts.passage_tokens,
        num_docs=2, dtype="mixed_bfloat16",
    )
    retrieved = rag.retrieve(x)
    outputs = rag(x)
    assert rag.log_doc_score_scale.dtype == "float32"
    assert retrieved["doc_log_probs"].dtype == tf.float32
    assert outputs.dtype == tf.float32 and np.all(np.isfinite(outputs.numpy()))
