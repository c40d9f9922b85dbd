"""The RAG train step under XLA (`jit_compile=True`): same loss and update as without.

The step holds the in-graph (`tensor`) retrieval, with `top_k` or with
`tf.math.approx_max_k`, the passage posterior `P(z|x)` recomputed from the
trainable query encoder, RAG-Token or RAG-Sequence marginalisation, and, for
distillation, the `Distiller` loss on top of a RAG teacher and a RAG student.
Twins (same seeds, same batches) are trained with and without XLA.
"""

import keras
import numpy as np
import pytest

from keras_ragkd.distillation import Distiller
from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag import RetrievalAugmentedGenerator
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from tests.rag.conftest import tiny_generator
from tests.rag.conftest import token_query_encoder

# XLA fuses and reorders float32 arithmetic; measured differences were below
# 1e-6 relative (losses) and 1e-6 absolute (weights) after 2 SGD steps.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
BATCH = 8

pytestmark = pytest.mark.slow


def _rag_model(preprocessor, passages, approx, marginalization="token", seed=0):
    encoder = token_query_encoder(preprocessor.vocabulary_size, seed=seed)
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    retriever = PassageRetriever(index, k=3, backend="tensor", use_approx_max_k=approx)
    rag = RetrievalAugmentedGenerator(
        encoder, retriever, tiny_generator(preprocessor.vocabulary_size, seed=seed),
        passage_tokens=passage_ids, num_docs=3, marginalization=marginalization,
        doc_score_scale=5.0,
    )
    return RagQuestionAnswerer(preprocessor, rag)


def _pairs(questions):
    questions = questions[: 2 * BATCH]
    return [q["question"] for q in questions], [q["answer"] for q in questions]


def _check_same(histories, weights):
    (eager, xla), (eager_weights, xla_weights) = histories, weights
    loss_diff = max(np.max(np.abs(np.subtract(xla[k], eager[k])) / np.abs(eager[k]))
                    for k in eager)
    weight_diff = max(np.max(np.abs(a - b), initial=0.0)
                      for a, b in zip(xla_weights, eager_weights))
    print(f"XLA vs eager: max relative loss difference {loss_diff:.2e}, "
          f"max weight difference {weight_diff:.2e}")
    assert sorted(eager) == sorted(xla)
    for key in eager:
        assert np.all(np.isfinite(eager[key])), key
        np.testing.assert_allclose(xla[key], eager[key], rtol=LOSS_RTOL, err_msg=key)
    for a, b in zip(xla_weights, eager_weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHT_ATOL)


@pytest.mark.parametrize(
    "approx, marginalization",
    # `top_k` with RAG-Token is the teacher of the Distiller test below.
    [(True, "token"), (False, "sequence")],
    ids=["approx_max_k-token", "top_k-sequence"],
)
def test_rag_train_step_under_xla_matches_eager(kb, token_preprocessor, approx,
                                                marginalization):
    passages, questions = kb
    questions, answers = _pairs(questions)
    histories, weights = [], []
    for jit_compile in (False, True):
        model = _rag_model(token_preprocessor, passages, approx, marginalization)
        model.rag.query_encoder.trainable = True  # Its gradient goes through P(z|x).
        model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
        assert model.jit_compile is jit_compile
        embeddings = model.rag.query_encoder.layers[0].embeddings
        initial = embeddings.numpy()
        history = model.fit(questions, answers, batch_size=BATCH, shuffle=False,
                            epochs=1, verbose=0)
        assert not np.allclose(embeddings.numpy(), initial), "the query encoder did not train"
        histories.append(history.history)
        weights.append([w.numpy() for w in model.rag.weights])
    _check_same(histories, weights)


def test_rag_to_rag_distiller_step_under_xla_matches_eager(kb, token_preprocessor):
    passages, questions = kb
    questions, answers = _pairs(questions)
    histories, weights = [], []
    for jit_compile in (False, True):
        teacher = _rag_model(token_preprocessor, passages, approx=False, seed=1)
        student = _rag_model(token_preprocessor, passages, approx=True, seed=2)
        distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0, ignore_class=0)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            jit_compile=jit_compile,
        )
        assert distiller.jit_compile is jit_compile
        history = distiller.fit(questions, answers, batch_size=BATCH, shuffle=False,
                                epochs=1, verbose=0)
        histories.append(history.history)
        weights.append([w.numpy() for w in student.weights])
    assert {"loss", "student_loss", "distillation_loss"} <= set(histories[0])
    _check_same(histories, weights)
