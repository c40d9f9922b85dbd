"""Retrieval in the input pipeline against the in-model `faiss` backend.

The same batches go through a RAG model whose retriever searches FAISS in the
step (`tf.py_function`) and through a model with no retriever fed by
`with_retrieved_passages` (FAISS in `tf.data`, scores recomputed in the
graph): same candidates, same loss, same gradients (query encoder included),
same `fit`; and the second compiles with `jit_compile=True`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag import RagSequenceLoss
from keras_ragkd.rag import RagTokenLoss
from keras_ragkd.rag import RetrievalAugmentedGenerator
from keras_ragkd.rag.input_pipeline_retrieval import CANDIDATE_KEYS
from keras_ragkd.rag.input_pipeline_retrieval import with_retrieved_passages
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from tests.rag.conftest import tiny_generator
from tests.rag.conftest import token_query_encoder

# Both paths run the same float32 ops on the same values; measured
# differences were 0 (loss, gradients) in eager mode and below 1e-6 relative
# with XLA (which fuses and reorders).
RTOL = 1e-6
ATOL = 1e-7
XLA_RTOL = 1e-5
XLA_ATOL = 1e-5
BATCH = 8
NUM_DOCS = 3
K = 4


def _parts(preprocessor, passages, seed=0):
    encoder = token_query_encoder(preprocessor.vocabulary_size, seed=seed)
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    return encoder, index, passage_ids, tiny_generator(preprocessor.vocabulary_size, seed=seed)


def _rag(encoder, retriever, generator, marginalization="token", passage_tokens=None):
    return RetrievalAugmentedGenerator(
        encoder, retriever, generator, passage_tokens=passage_tokens, num_docs=NUM_DOCS,
        marginalization=marginalization, doc_score_scale=5.0,
    )


def _twins(preprocessor, passages, marginalization="token"):
    """An in-model faiss RAG task and a retriever-less one, same initial weights.

    The query encoders are frozen (as `build_rag_question_answerer` makes
    them): then the pipeline's snapshot retrieves what the live encoder does.
    """
    encoder, index, passage_ids, generator = _parts(preprocessor, passages)
    encoder.trainable = False
    in_model = _rag(
        encoder, PassageRetriever(index, k=K), generator, marginalization, passage_ids
    )
    encoder, _, _, generator = _parts(preprocessor, passages)
    encoder.trainable = False
    in_pipeline = _rag(encoder, None, generator, marginalization)
    return (RagQuestionAnswerer(preprocessor, in_model),
            RagQuestionAnswerer(preprocessor, in_pipeline), index, passage_ids)


def _pairs(questions):
    questions = questions[: 2 * BATCH]
    return [q["question"] for q in questions], [q["answer"] for q in questions]


def _max_relative(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


@pytest.mark.parametrize("marginalization", ["token", "sequence"])
def test_same_candidates_loss_and_gradients_as_in_model_faiss(kb, token_preprocessor,
                                                              marginalization):
    passages, questions = kb
    in_model, in_pipeline, index, passage_ids = _twins(
        token_preprocessor, passages, marginalization
    )
    for model in (in_model, in_pipeline):
        model.rag.query_encoder.trainable = True  # Its gradient goes through P(z|x).
    loss_fn = RagTokenLoss() if marginalization == "token" else RagSequenceLoss()
    batches = in_model.preprocess(*_pairs(questions), batch_size=BATCH)
    pipeline = with_retrieved_passages(
        batches, index, in_pipeline.rag.query_encoder, K, passage_ids
    )
    checked = 0
    for (x, y), (x_candidates, y_candidates) in zip(batches, pipeline):
        np.testing.assert_array_equal(y_candidates, y)
        in_graph = in_model.rag.retrieve(x)
        np.testing.assert_array_equal(x_candidates["candidate_rows"][:, :NUM_DOCS],
                                      in_graph["rows"])
        results = []
        for model, inputs in ((in_model, x), (in_pipeline, x_candidates)):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(inputs))
            gradients = tape.gradient(loss, model.rag.trainable_variables)
            results.append(
                (loss.numpy(), [tf.convert_to_tensor(g).numpy() for g in gradients])
            )
        (loss_a, grads_a), (loss_b, grads_b) = results
        assert np.isfinite(loss_a) and loss_a > 0
        print(f"loss {loss_a:.6f}: relative difference {_max_relative(loss_b, loss_a):.1e}, "
              "max gradient difference "
              f"{max(np.max(np.abs(a - b)) for a, b in zip(grads_a, grads_b)):.1e}")
        np.testing.assert_allclose(loss_b, loss_a, rtol=RTOL)
        assert len(grads_a) == len(grads_b)
        table = in_model.rag.query_encoder.weights[0]
        [position] = [i for i, v in enumerate(in_model.rag.trainable_variables) if v is table]
        encoder_gradient = grads_a[position]
        assert encoder_gradient.shape == tuple(table.shape)
        assert np.any(encoder_gradient != 0), "no gradient reached the query encoder"
        for a, b in zip(grads_a, grads_b):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
        checked += 1
    assert checked == 2


def _fit(model, dataset, jit_compile, epochs=2):
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    history = model.fit(dataset, epochs=epochs, verbose=0)
    assert model.jit_compile is jit_compile  # Keras turns it off for py_function layers.
    return history.history, [w.numpy() for w in model.rag.weights if w.trainable]


@pytest.mark.slow
def test_fit_matches_in_model_faiss_and_compiles_with_xla(kb, token_preprocessor):
    passages, questions = kb
    in_model, in_pipeline, index, passage_ids = _twins(token_preprocessor, passages)
    batches = in_model.preprocess(*_pairs(questions), batch_size=BATCH)
    eager_history, eager_weights = _fit(in_model, batches, jit_compile=False)
    pipeline = with_retrieved_passages(
        batches, index, in_pipeline.rag.query_encoder, K, passage_ids
    )
    xla_history, xla_weights = _fit(in_pipeline, pipeline, jit_compile=True)
    print(f"in-pipeline (XLA) vs in-model faiss: loss {xla_history['loss']} vs "
          f"{eager_history['loss']}, max weight difference "
          f"{max(np.max(np.abs(a - b)) for a, b in zip(xla_weights, eager_weights)):.1e}")
    np.testing.assert_allclose(xla_history["loss"], eager_history["loss"], rtol=XLA_RTOL)
    assert len(xla_weights) == len(eager_weights)
    for a, b in zip(xla_weights, eager_weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=XLA_ATOL)


@pytest.mark.slow
def test_trainable_query_encoder_trains_under_xla(kb, token_preprocessor):
    passages, questions = kb
    histories, weights = [], []
    for jit_compile in (False, True):
        encoder, index, passage_ids, generator = _parts(token_preprocessor, passages)
        encoder.trainable = True
        model = RagQuestionAnswerer(token_preprocessor, _rag(encoder, None, generator))
        dataset = with_retrieved_passages(
            model.preprocess(*_pairs(questions), batch_size=BATCH), index, encoder, K,
            passage_ids,
        )
        initial = encoder.weights[0].numpy()
        history, trained = _fit(model, dataset, jit_compile, epochs=1)
        assert not np.allclose(encoder.weights[0].numpy(), initial), "encoder did not train"
        histories.append(history)
        weights.append(trained)
    print(f"in-pipeline, trainable encoder, XLA vs not: loss {histories[1]['loss']} vs "
          f"{histories[0]['loss']}, max weight difference "
          f"{max(np.max(np.abs(a - b)) for a, b in zip(*weights)):.1e}")
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=XLA_RTOL)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=XLA_ATOL)


def test_queries_are_embedded_with_a_snapshot_of_the_encoder(kb, token_preprocessor):
    passages, questions = kb
    encoder, index, passage_ids, _ = _parts(token_preprocessor, passages)
    batches = token_preprocessor(*[tf.constant(v) for v in _pairs(questions)])[0]
    dataset = with_retrieved_passages(
        tf.data.Dataset.from_tensors(batches), index, encoder, K, passage_ids
    )
    before = next(iter(dataset))
    rows, _, _, embeddings = index.search_arrays(np.asarray(encoder(batches["query"])), K)
    np.testing.assert_array_equal(before["candidate_rows"], rows)
    np.testing.assert_array_equal(before["candidate_embeddings"], embeddings)
    np.testing.assert_array_equal(before["candidate_token_ids"], passage_ids[rows])
    encoder.weights[0].assign(tf.random.normal(encoder.weights[0].shape, seed=1))
    after = next(iter(dataset))
    for key in CANDIDATE_KEYS:
        np.testing.assert_array_equal(after[key], before[key])


def test_retriever_less_layer_round_trips_its_config(token_preprocessor, kb):
    passages, _ = kb
    encoder, _, _, generator = _parts(token_preprocessor, passages)
    rag = _rag(encoder, None, generator)
    restored = RetrievalAugmentedGenerator.from_config(rag.get_config())
    assert restored.retriever is None and restored.num_docs == NUM_DOCS


def test_bad_candidates_are_refused(kb, token_preprocessor):
    passages, questions = kb
    encoder, index, passage_ids, generator = _parts(token_preprocessor, passages)
    rag = _rag(encoder, None, generator)
    x, _ = token_preprocessor(*[tf.constant(v[:2]) for v in _pairs(questions)])
    with pytest.raises(ValueError, match="no retriever.*Received: keys"):
        rag(x)
    candidates = next(iter(with_retrieved_passages(
        tf.data.Dataset.from_tensors(x), index, encoder, 2, passage_ids
    )))
    with pytest.raises(ValueError, match="at least `num_docs=3` candidates"):
        rag(candidates)
    partial = dict(x, candidate_rows=candidates["candidate_rows"])
    with pytest.raises(ValueError, match="need all of.*Received: keys"):
        rag(partial)


def test_bad_pipeline_arguments_are_refused(kb, token_preprocessor):
    passages, _ = kb
    encoder, index, passage_ids, _ = _parts(token_preprocessor, passages)
    dataset = tf.data.Dataset.from_tensors({"query": passage_ids[:2]})
    with pytest.raises(TypeError, match="Received: dataset="):
        with_retrieved_passages(list(passage_ids), index, encoder, K, passage_ids)
    with pytest.raises(TypeError, match="Received: index="):
        with_retrieved_passages(dataset, "index", encoder, K, passage_ids)
    with pytest.raises(ValueError, match="Received: passage_token_ids.shape"):
        with_retrieved_passages(dataset, index, encoder, K, passage_ids[1:])
    with pytest.raises(ValueError, match="built Keras layer.*Received: query_encoder"):
        with_retrieved_passages(dataset, index, keras.layers.Dense(16), K, passage_ids)
    with pytest.raises(ValueError, match=r"dict with \"query\""):
        with_retrieved_passages(tf.data.Dataset.from_tensors(passage_ids[:2]), index,
                                encoder, K, passage_ids)
    wrong_size = keras.Sequential([keras.Input((None,), dtype="int32"),
                                   keras.layers.Embedding(50, 4),
                                   keras.layers.GlobalAveragePooling1D()])
    with pytest.raises(ValueError, match=r"\(batch, 16\).*Received: query_embeddings"):
        with_retrieved_passages(dataset, index, wrong_size, K, passage_ids)


def test_pretrained_minilm_query_encoder_on_raw_strings(kb, encoder):
    passages, questions = kb
    passages = passages[:12]
    index = PassageIndex.from_embeddings(
        passages, encoder.encode([p["text"] for p in passages], verbose=0)
    )
    queries = [q["question"] for q in questions[:4]]
    dataset = with_retrieved_passages(
        tf.data.Dataset.from_tensors({"query": tf.constant(queries)}), index, encoder, 3,
        np.arange(2 * len(passages)).reshape(len(passages), 2),
    )
    x = next(iter(dataset))
    rows, _, _, _ = index.search_arrays(encoder.encode(queries, verbose=0), 3)
    np.testing.assert_array_equal(x["candidate_rows"], rows)
