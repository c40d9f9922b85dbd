import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.retrieval import KerasTextEncoder
from keras_ragkd.retrieval import MiniLMEncoder
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageReindexer
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import use_backend
from keras_ragkd.retrieval.passage import passage_text
from keras_ragkd.models import load_minilm_tokenizer

BACKENDS = ["faiss", "tensor"]


def tiny_text_encoder(texts, dim=16, seed=0):
    """A small trainable Keras tower: raw strings -> unit vectors."""
    keras.utils.set_random_seed(seed)
    vectorizer = keras.layers.TextVectorization(output_sequence_length=24)
    vectorizer.adapt(texts)
    return keras.Sequential(
        [
            keras.Input(shape=(), dtype="string"),
            vectorizer,
            keras.layers.Embedding(vectorizer.vocabulary_size(), dim, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(dim),
            keras.layers.UnitNormalization(),
        ]
    )


@pytest.fixture(scope="module")
def small_kb(countries):
    """60 countryinfo passages, a tiny encoder and its index."""
    passages, questions = countries
    passages = passages[:60]
    ids = {p["id"] for p in passages}
    questions = [q for q in questions if q["passage_id"] in ids]
    texts = [p["title"] + ". " + p["text"] for p in passages]
    encoder = tiny_text_encoder(texts + [q["question"] for q in questions])
    index = PassageIndex.build(passages, KerasTextEncoder(encoder), verbose=0)
    return index, encoder, questions


def query_vectors(encoder, questions, n=8):
    return keras.ops.convert_to_numpy(
        encoder(tf.constant([q["question"] for q in questions[:n]]))
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_follow_the_contract(backend, small_kb):
    index, encoder, questions = small_kb
    retriever = PassageRetriever(index, k=4, backend=backend)
    queries = query_vectors(encoder, questions)
    outputs = retriever(queries)
    assert set(outputs) == {"rows", "mask", "doc_scores", "passage_embeddings"}
    assert outputs["rows"].dtype == tf.int32 and outputs["rows"].shape == (8, 4)
    assert outputs["mask"].dtype == tf.bool and bool(tf.reduce_all(outputs["mask"]))
    assert outputs["passage_embeddings"].shape == (8, 4, 16)
    rows = outputs["rows"].numpy()
    np.testing.assert_allclose(
        outputs["passage_embeddings"].numpy(), index.embeddings[rows], atol=1e-6
    )
    np.testing.assert_allclose(
        outputs["doc_scores"].numpy(),
        np.einsum("bd,bkd->bk", queries, index.embeddings[rows]),
        atol=1e-5,
    )
    np.testing.assert_array_equal(rows, index.search(queries, k=4).rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_index_is_masked(backend):
    index = PassageIndex.from_embeddings(
        [{"id": str(i), "text": f"t{i}"} for i in range(3)], np.eye(3, 4)
    )
    outputs = PassageRetriever(index, k=5, backend=backend)(
        np.array([[0.1, 0.3, 0.2, 0.0]], dtype="float32")
    )
    assert outputs["rows"].numpy().tolist() == [[1, 2, 0, 0, 0]]
    assert outputs["mask"].numpy().tolist() == [[True, True, True, False, False]]
    np.testing.assert_allclose(outputs["doc_scores"], [[0.3, 0.2, 0.1, 0.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_reach_queries_only_through_doc_scores(backend, small_kb):
    index, encoder, questions = small_kb
    retriever = PassageRetriever(index, k=4, backend=backend)
    texts = tf.constant([q["question"] for q in questions[:8]])
    with tf.GradientTape() as tape:
        outputs = retriever(encoder(texts))
        loss = -tf.reduce_mean(tf.nn.log_softmax(outputs["doc_scores"])[:, 0])
    gradients = tape.gradient(loss, encoder.trainable_variables)
    assert all(g is not None for g in gradients)
    assert sum(float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) for g in gradients) > 0


def build_scoring_model(query_encoder, retriever):
    texts = keras.Input(shape=(), dtype="string")
    outputs = retriever(query_encoder(texts))
    return keras.Model(texts, outputs["doc_scores"])


def gold_position_dataset(index, questions, retriever, encoder, batch_size=8):
    """(question, label) where label is the gold passage's slot, else 0."""
    texts = [q["question"] for q in questions]
    rows = retriever(query_vectors(encoder, questions, len(questions)))["rows"].numpy()
    gold = np.array([index.row_of(q["passage_id"]) for q in questions])
    labels = np.argmax(rows == gold[:, None], axis=1)
    return tf.data.Dataset.from_tensor_slices((texts, labels)).batch(batch_size)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_trains_the_query_tower(backend, small_kb):
    index, _, questions = small_kb
    encoder = tiny_text_encoder(
        [passage_text(p) for p in index.passages] + [q["question"] for q in questions]
    )
    retriever = PassageRetriever(index, k=4, backend=backend)
    model = build_scoring_model(encoder, retriever)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    dataset = gold_position_dataset(index, questions[:32], retriever, encoder)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, encoder.trainable_weights)]
    assert all(changed)


def test_tensor_backend_trains_under_xla(small_kb):
    index, encoder, questions = small_kb
    keras.utils.set_random_seed(0)
    projection = keras.layers.Dense(16, kernel_initializer="identity")
    retriever = PassageRetriever(index, k=4, backend="tensor")
    inputs = keras.Input((16,))
    model = keras.Model(inputs, retriever(projection(inputs))["doc_scores"])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    assert model.jit_compile is True
    before = projection.kernel.numpy().copy()
    queries = query_vectors(encoder, questions, 16)
    model.fit(queries, np.ones(16, "int32"), batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(before, projection.kernel.numpy())


def test_faiss_backend_is_never_xla_compiled(small_kb):
    inputs = keras.Input((16,))
    model = keras.Model(inputs, PassageRetriever(small_kb[0], k=2)(inputs)["doc_scores"])
    model.compile(loss="mse", jit_compile="auto")
    assert model.jit_compile is False


@pytest.mark.slow
def test_fit_step_updates_minilm_query_encoder(country_index, countries):
    _, questions = countries
    query_encoder = MiniLMEncoder(sequence_length=16)
    retriever = PassageRetriever(country_index, k=4)
    model = build_scoring_model(query_encoder, retriever)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # one step: tracing BERT's train step costs more
    )
    kernel = query_encoder.backbone.transformer_layers[-1]._feedforward_output_dense.kernel
    before = kernel.numpy().copy()
    texts = [q["question"] for q in questions[:4]]
    dataset = tf.data.Dataset.from_tensor_slices((texts, [1, 1, 1, 1])).batch(4)
    model.fit(dataset, epochs=1, verbose=0)
    assert not np.allclose(before, kernel.numpy())
    assert country_index.encoder.identity != query_encoder.identity


def test_approx_max_k_option_matches_exact_on_cpu(small_kb):
    # tf.math.approx_max_k is approximate on TPU; on CPU it is exact.
    index, encoder, questions = small_kb
    queries = query_vectors(encoder, questions)
    approximate = PassageRetriever(index, k=4, backend="tensor", use_approx_max_k=True)
    assert approximate.use_approx_max_k is True
    np.testing.assert_array_equal(
        approximate(queries)["rows"].numpy(), index.search(queries, k=4).rows
    )


def test_keras_text_encoder_accepts_token_id_models(small_kb):
    index = small_kb[0]
    tokenizer = load_minilm_tokenizer(sequence_length=12)
    keras.utils.set_random_seed(0)
    token_model = keras.Sequential(
        [
            keras.layers.Embedding(tokenizer.vocabulary_size(), 8, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
        ]
    )
    encoder = KerasTextEncoder(token_model, tokenizer=tokenizer)
    texts = [passage_text(p) for p in index.passages[:5]]
    vectors = encoder.encode(texts, batch_size=2)
    expected = token_model(np.asarray(tokenizer(texts)))
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert encoder.dim == 8 and encoder.identity.startswith("Sequential:")


def test_supports_jit_follows_backend(small_kb):
    retriever = PassageRetriever(small_kb[0], k=2)
    assert retriever.supports_jit is False
    retriever.set_backend("tensor")
    assert retriever.supports_jit is True


def test_use_backend_switches_a_model_in_place(small_kb):
    index, encoder, questions = small_kb
    queries = query_vectors(encoder, questions)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, PassageRetriever(index, k=3)(inputs))
    faiss_outputs = model.predict(queries, verbose=0)
    switched = use_backend(model, "tensor")
    assert [r.backend for r in switched] == ["tensor"]
    tensor_outputs = model.predict(queries, verbose=0)
    np.testing.assert_array_equal(faiss_outputs["rows"], tensor_outputs["rows"])
    np.testing.assert_allclose(
        faiss_outputs["doc_scores"], tensor_outputs["doc_scores"], atol=1e-6
    )
    use_backend(model, "faiss")
    np.testing.assert_array_equal(model.predict(queries, verbose=0)["rows"], faiss_outputs["rows"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_file_round_trip_references_index_by_path(backend, tmp_path, small_kb):
    index, encoder, questions = small_kb
    index.save(tmp_path / "kb")
    retriever = PassageRetriever(index, k=3, backend=backend)
    config = retriever.get_config()
    assert config["index"] == str((tmp_path / "kb").resolve())
    assert config["backend"] == backend and "passage_token_length" not in config
    inputs = keras.Input((16,))
    model = keras.Model(inputs, retriever(inputs))
    queries = query_vectors(encoder, questions)
    expected = model.predict(queries, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    outputs = reloaded.predict(queries, verbose=0)
    for key in expected:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-6)
    reloaded_retriever = [l for l in reloaded.layers if isinstance(l, PassageRetriever)][0]
    assert reloaded_retriever.index.directory == config["index"]


def test_unsaved_index_cannot_be_referenced(tmp_path, small_kb):
    index = PassageIndex.from_embeddings(small_kb[0].passages, small_kb[0].embeddings)
    retriever = PassageRetriever(index, k=2)
    with pytest.raises(ValueError, match="Received: index.directory=None"):
        retriever.get_config()
    index.save(tmp_path / "kb")
    assert retriever.get_config()["index"] == str((tmp_path / "kb").resolve())
    index.add([{"id": "new", "text": "new"}], embeddings=np.ones((1, 16)))
    with pytest.raises(ValueError, match="Received: index.has_unsaved_changes=True"):
        retriever.get_config()


def test_faiss_backend_refuses_its_own_savedmodel_export(tmp_path, small_kb):
    inputs = keras.Input((16,))
    model = keras.Model(inputs, PassageRetriever(small_kb[0], k=2)(inputs)["rows"])
    with pytest.raises(ValueError, match="Received: backend='faiss'"):
        model.export(tmp_path / "export", verbose=False)
    with pytest.raises(ValueError, match="keras_ragkd.serving.export_model"):
        tf.saved_model.save(model, str(tmp_path / "saved"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_retriever_runs_in_tf_data_map(backend, small_kb):
    index, encoder, questions = small_kb
    retriever = PassageRetriever(index, k=3, backend=backend)
    queries = query_vectors(encoder, questions, 16)
    dataset = (
        tf.data.Dataset.from_tensor_slices(queries)
        .batch(4)
        .map(lambda q: retriever(q)["rows"], num_parallel_calls=2)
    )
    rows = np.concatenate([r.numpy() for r in dataset])
    np.testing.assert_array_equal(rows, index.search(queries, k=3).rows)


def test_bad_arguments_are_refused(small_kb):
    index = small_kb[0]
    with pytest.raises(ValueError, match="Received: backend='gpu'"):
        PassageRetriever(index, backend="gpu")
    with pytest.raises(ValueError, match="Received: k=0"):
        PassageRetriever(index, k=0)
    with pytest.raises(TypeError, match="Received: index="):
        PassageRetriever(index=np.eye(3))
    with pytest.raises(ValueError, match="Received: query_embeddings.shape=\\(2, 7\\)"):
        PassageRetriever(index, k=2)(np.zeros((2, 7), "float32"))


def test_reindexer_rebuilds_index_and_tensor_weights(small_kb):
    source, _, questions = small_kb
    index = PassageIndex.from_embeddings(source.passages, source.embeddings)
    encoder = tiny_text_encoder(
        [passage_text(p) for p in index.passages] + [q["question"] for q in questions],
        seed=1,
    )
    index.rebuild(KerasTextEncoder(encoder))
    faiss_retriever = PassageRetriever(index, k=4, name="faiss_retriever")
    tensor_retriever = PassageRetriever(index, k=4, backend="tensor", name="tensor_retriever")
    texts = keras.Input(shape=(), dtype="string")
    query = encoder(texts)
    model = keras.Model(
        texts,
        faiss_retriever(query)["doc_scores"] + tensor_retriever(query)["doc_scores"],
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    reindexer = PassageReindexer(
        [faiss_retriever, tensor_retriever], KerasTextEncoder(encoder), every_n_steps=2
    )
    before = index.embeddings.copy()
    dataset = gold_position_dataset(index, questions[:32], faiss_retriever, encoder)
    model.fit(dataset, epochs=1, verbose=0, callbacks=[reindexer])
    assert reindexer.rebuilds == 2 + 1  # 4 batches / every 2 steps, + epoch end
    assert not np.allclose(before, index.embeddings)
    expected = KerasTextEncoder(encoder).encode([passage_text(p) for p in index.passages])
    np.testing.assert_allclose(index.embeddings, expected, atol=1e-5)
    np.testing.assert_allclose(tensor_retriever.passage_embeddings.numpy(), expected, atol=1e-5)
    assert reindexer.get_config()["every_n_steps"] == 2
    with pytest.raises(ValueError, match="Received: every_n_epochs=None, every_n_steps=None"):
        PassageReindexer(faiss_retriever, encoder, every_n_epochs=None)
