import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.data.countries import country_questions
from keras_ragkd.data.countries import country_split
from keras_ragkd.data import derange_facts
from keras_ragkd.retrieval import HybridQueryEncoder
from keras_ragkd.retrieval import HybridRetriever
from keras_ragkd.retrieval import KerasTextEncoder
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import TfidfQueryEncoder
from keras_ragkd.retrieval import use_backend
from keras_ragkd.retrieval.passage import as_passages
from keras_ragkd.retrieval.passage import passage_text

BACKENDS = ["faiss", "tensor"]
FUSIONS = ["weighted", "rrf"]


@pytest.fixture(scope="module")
def tfidf(countries):
    return TfidfEncoder(dim=8).fit([passage_text(p) for p in as_passages(countries[0])])


@pytest.fixture(scope="module")
def lexical(tfidf):
    return TfidfQueryEncoder.from_encoder(tfidf, project=False)


@pytest.fixture(scope="module")
def country_queries(countries, country_vectors, lexical):
    """300 questions: MiniLM and TF-IDF query vectors, gold rows."""
    questions = countries[1][:300]
    return {
        "dense": country_vectors[1][:300],
        "lexical": lexical(tf.constant([q["question"] for q in questions])).numpy(),
        "questions": questions,
    }


def reference_hybrid(index, tfidf, queries, k, candidates, fusion, weight, constant=60.0):
    """NumPy/scipy: the documented algorithm over exact full score rows."""
    passage_vectors = tfidf.tfidf_vectors([passage_text(p) for p in index.passages])
    lexical_all = queries["lexical"] @ passage_vectors.T.toarray()
    dense_all = queries["dense"] @ index.embeddings.T
    results = []
    for dense, lexical in zip(dense_all, lexical_all):
        dense_list = np.argsort(-dense, kind="stable")[:candidates]
        lexical_list = [r for r in np.argsort(-lexical, kind="stable")[:candidates]
                        if lexical[r] > 0]
        if fusion == "weighted":
            scores = {r: dense[r] + weight * lexical[r]
                      for r in list(dense_list) + lexical_list}
        else:
            scores = {}
            for ranked in (dense_list, lexical_list):
                for rank, r in enumerate(ranked, 1):
                    scores[r] = scores.get(r, 0.0) + 1.0 / (constant + rank)
        results.append(sorted(scores, key=lambda r: (-scores[r], r))[:k])
    return np.array(results)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_backends_return_the_same_passages_as_the_reference(
    fusion, country_index, tfidf, country_queries
):
    queries = {key: country_queries[key] for key in ("dense", "lexical")}
    outputs = {}
    for backend in BACKENDS:
        retriever = HybridRetriever(
            country_index, tfidf, k=5, backend=backend, fusion=fusion, candidates=20
        )
        outputs[backend] = {key: value.numpy() for key, value in retriever(queries).items()}
    faiss_outputs, tensor_outputs = outputs["faiss"], outputs["tensor"]
    np.testing.assert_array_equal(faiss_outputs["rows"], tensor_outputs["rows"])
    np.testing.assert_allclose(faiss_outputs["doc_scores"], tensor_outputs["doc_scores"],
                               atol=1e-5)
    assert faiss_outputs["mask"].all() and tensor_outputs["mask"].all()
    expected = reference_hybrid(country_index, tfidf, queries, 5, 20, fusion, 0.25)
    # float32 (ours) vs float64 (scipy) lexical scores: near-ties may swap.
    assert np.mean(np.all(tensor_outputs["rows"] == expected, axis=1)) >= 0.99
    rows = tensor_outputs["rows"]
    np.testing.assert_allclose(
        tensor_outputs["passage_embeddings"], country_index.embeddings[rows], atol=1e-6
    )
    lexical_scores = (queries["lexical"] @ tfidf.tfidf_vectors(
        [passage_text(p) for p in country_index.passages]).T.toarray())
    expected_scores = np.einsum("bd,bkd->bk", queries["dense"],
                                country_index.embeddings[rows]) + 0.25 * np.take_along_axis(
        lexical_scores, rows, 1)
    np.testing.assert_allclose(tensor_outputs["doc_scores"], expected_scores, atol=1e-5)


def capital_top_passage_share(retriever, questions, queries, index):
    top = retriever(queries)["rows"].numpy()[:, 0]
    return float(np.mean([index.passages[row].id == q["passage_id"]
                          for row, q in zip(top, questions)]))


def test_swapped_capitals_hybrid_finds_the_country_s_passage(
    countries, country_vectors, minilm_encoder, tfidf, lexical
):
    # Every held-out capital passage names another held-out capital; the
    # capital question of a country must retrieve that country's passage.
    passages = countries[0]
    _, test = country_split()
    capital_questions = country_questions("test", types=["capital"])
    swapped, questions = derange_facts(passages, capital_questions, test, seed=0)
    changed = [i for i, (a, b) in enumerate(zip(passages, swapped)) if a != b]
    vectors = country_vectors[0].copy()
    vectors[changed] = minilm_encoder.encode(
        [passage_text(p) for p in as_passages([swapped[i] for i in changed])], verbose=0
    )
    index = PassageIndex.from_embeddings(swapped, vectors)
    texts = [q["question"] for q in questions]
    queries = {"dense": minilm_encoder.encode(texts, verbose=0),
               "lexical": lexical(tf.constant(texts)).numpy()}
    dense_only = capital_top_passage_share(
        HybridRetriever(index, tfidf, k=3, lexical_weight=0.0), questions, queries, index
    )
    hybrid = capital_top_passage_share(
        HybridRetriever(index, tfidf, k=3), questions, queries, index
    )
    assert hybrid >= dense_only and hybrid >= 0.99, (dense_only, hybrid)


@pytest.fixture(scope="module")
def small_kb(countries):
    """60 passages, a tiny trainable dense tower, its index and TF-IDF."""
    passages, questions = countries
    passages = passages[:60]
    ids = {p["id"] for p in passages}
    questions = [q for q in questions if q["passage_id"] in ids][:32]
    texts = [passage_text(p) for p in as_passages(passages)]
    keras.utils.set_random_seed(0)
    vectorizer = keras.layers.TextVectorization(output_sequence_length=24)
    vectorizer.adapt(texts + [q["question"] for q in questions])
    dense = keras.Sequential([
        keras.Input(shape=(), dtype="string"),
        vectorizer,
        keras.layers.Embedding(vectorizer.vocabulary_size(), 16, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(16),
        keras.layers.UnitNormalization(),
    ])
    index = PassageIndex.build(passages, KerasTextEncoder(dense), verbose=0)
    tfidf = TfidfEncoder(dim=4).fit(texts)
    return index, dense, tfidf, questions


def hybrid_model(small_kb, backend, **retriever_kwargs):
    index, dense, tfidf, _ = small_kb
    retriever = HybridRetriever(index, tfidf, k=4, backend=backend, **retriever_kwargs)
    texts = keras.Input(shape=(), dtype="string")
    outputs = retriever(HybridQueryEncoder(dense, tfidf)(texts))
    return keras.Model(texts, outputs), retriever


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_trains_the_dense_tower_and_the_lexical_weight(backend, small_kb):
    _, dense, _, questions = small_kb
    model, retriever = hybrid_model(small_kb, backend, train_lexical_weight=True)
    scores = keras.Model(model.input, model.output["doc_scores"])
    scores.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in dense.trainable_weights]
    weight = float(retriever.lexical_weight.numpy())
    texts = [q["question"] for q in questions]
    labels = np.arange(len(texts)) % 4
    scores.fit(tf.data.Dataset.from_tensor_slices((texts, labels)).batch(8), epochs=1,
               verbose=0)
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, dense.trainable_weights))
    assert float(retriever.lexical_weight.numpy()) != weight
    assert [w.name for w in retriever.trainable_weights] == ["lexical_weight"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_file_round_trip(backend, tmp_path, small_kb):
    index, _, _, questions = small_kb
    index.save(tmp_path / "kb")
    model, _ = hybrid_model(small_kb, backend, fusion="rrf", lexical_weight=0.5)
    texts = tf.constant([q["question"] for q in questions])
    expected = model.predict(texts, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    outputs = reloaded.predict(texts, verbose=0)
    for key in expected:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-6)
    retriever = [l for l in reloaded.layers if isinstance(l, HybridRetriever)][0]
    assert (retriever.backend, retriever.fusion) == (backend, "rrf")
    assert float(retriever.lexical_weight.numpy()) == 0.5


def test_in_graph_backend_exports_a_savedmodel_without_py_function(tmp_path, small_kb):
    _, _, _, questions = small_kb
    model, retriever = hybrid_model(small_kb, "faiss")
    texts = tf.constant([q["question"] for q in questions])
    expected = model.predict(texts, verbose=0)
    use_backend(model, "tensor")
    model.export(tmp_path / "exported", verbose=False)
    graph = tf.saved_model.load(str(tmp_path / "exported"))
    outputs = graph.serve(texts)
    np.testing.assert_array_equal(outputs["rows"].numpy(), expected["rows"])
    np.testing.assert_allclose(outputs["doc_scores"].numpy(), expected["doc_scores"],
                               atol=1e-5)
    functions = tf.io.gfile.GFile(
        str(tmp_path / "exported" / "saved_model.pb"), "rb").read()
    assert b"EagerPyFunc" not in functions and b"PyFunc" not in functions
    assert retriever.backend == "tensor"


def test_tensor_backend_trains_under_xla(small_kb):
    index, _, tfidf, _ = small_kb
    retriever = HybridRetriever(index, tfidf, k=4, backend="tensor")
    keras.utils.set_random_seed(0)
    projection = keras.layers.Dense(16, kernel_initializer="identity")
    dense_input = keras.Input((16,))
    lexical_input = keras.Input((retriever.lexical_shape[1],))
    outputs = retriever({"dense": projection(dense_input), "lexical": lexical_input})
    model = keras.Model([dense_input, lexical_input], outputs["doc_scores"])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    assert model.jit_compile is True
    texts = [passage_text(p) for p in index.passages[:16]]
    lexical = TfidfQueryEncoder.from_encoder(tfidf, project=False)(tf.constant(texts))
    before = projection.kernel.numpy().copy()
    model.fit([index.embeddings[:16], lexical.numpy()], np.ones(16, "int32"), batch_size=8,
              epochs=1, verbose=0)
    assert not np.allclose(before, projection.kernel.numpy())


def test_lexical_weights_are_sparse(small_kb):
    index, _, tfidf, _ = small_kb
    retriever = HybridRetriever(index, tfidf, k=2)
    matrix = tfidf.tfidf_vectors([passage_text(p) for p in index.passages])
    assert retriever.lexical_values.shape == (matrix.nnz,)
    assert retriever.lexical_shape == matrix.shape
    assert retriever.lexical_identity.startswith(
        f"tfidf/{len(tfidf.vocabulary)}/"
    )


def test_bad_arguments_are_refused(small_kb):
    index, _, tfidf, _ = small_kb
    with pytest.raises(ValueError, match="Received: fusion='max'"):
        HybridRetriever(index, tfidf, fusion="max")
    with pytest.raises(ValueError, match="Received: candidates=3, k=5"):
        HybridRetriever(index, tfidf, k=5, candidates=3)
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match=f"Received: rrf_constant={bad!r}"):
            HybridRetriever(index, tfidf, rrf_constant=bad)
    with pytest.raises(ValueError, match="Received: lexical_encoder=None"):
        HybridRetriever(index)
    with pytest.raises(TypeError, match="Received: encoder="):
        HybridRetriever(index, "tfidf")
    retriever = HybridRetriever(index, tfidf, k=2)
    with pytest.raises(ValueError, match="Received: queries=EagerTensor"):
        retriever(np.zeros((2, 16), "float32"))
    with pytest.raises(ValueError, match=r"Received: lexical.shape=\(2, 3\)"):
        retriever({"dense": np.zeros((2, 16), "float32"),
                   "lexical": np.zeros((2, 3), "float32")})


@pytest.mark.slow  # ~33 s on 2 shared cores (eager RAG steps with a copy generator)
def test_a_rag_model_trains_through_the_hybrid_retriever(small_kb):
    from keras_ragkd.rag import CopyTransformerGenerator
    from keras_ragkd.rag import RetrievalAugmentedGenerator

    index, dense, tfidf, questions = small_kb
    rng = np.random.default_rng(0)
    passage_ids = rng.integers(3, 20, (len(index), 6)).astype("int32")
    retriever = HybridRetriever(index, tfidf, k=3, backend="tensor", train_lexical_weight=True)
    keras.utils.set_random_seed(0)
    generator = CopyTransformerGenerator(20, hidden_dim=8, num_heads=2, intermediate_dim=16,
                                         max_sequence_length=16)
    rag = RetrievalAugmentedGenerator(HybridQueryEncoder(dense, tfidf), retriever, generator,
                                      passage_tokens=passage_ids, num_docs=3)
    inputs = {
        "query": keras.Input((), dtype="string", name="query"),
        "question_token_ids": keras.Input((4,), dtype="int32", name="question_token_ids"),
        "decoder_token_ids": keras.Input((3,), dtype="int32", name="decoder_token_ids"),
    }
    model = keras.Model(inputs, rag(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)  # two steps: tracing the RAG train step costs more
    count = 16
    data = {
        "query": [q["question"] for q in questions[:count]],
        "question_token_ids": rng.integers(3, 20, (count, 4)).astype("int32"),
        "decoder_token_ids": rng.integers(3, 20, (count, 3)).astype("int32"),
    }
    targets = rng.integers(3, 20, (count, 3)).astype("int32")
    before = [w.numpy().copy() for w in dense.trainable_weights]
    weight = float(retriever.lexical_weight.numpy())
    dataset = tf.data.Dataset.from_tensor_slices((data, targets)).batch(8)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, dense.trainable_weights))
    assert float(retriever.lexical_weight.numpy()) != weight
