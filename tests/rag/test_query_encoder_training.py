"""A trainable query encoder: its own, smaller learning rate, and an index that follows it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageReindexer
from keras_ragkd.models import load_minilm_tokenizer
from tests.rag.conftest import COUNTRIES


def string_query_encoder(texts, dim=16, seed=0):
    """A small trainable encoder on raw strings (word embeddings, mean, L2)."""
    keras.utils.set_random_seed(seed)
    vectorizer = keras.layers.TextVectorization(output_mode="int", output_sequence_length=24)
    vectorizer.adapt(tf.constant(texts))
    return keras.Sequential(
        [
            keras.Input((), dtype="string"),
            vectorizer,
            keras.layers.Embedding(vectorizer.vocabulary_size(), dim, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.UnitNormalization(),
        ]
    )


def _model(kb, train_query_encoder):
    passages, questions = kb
    texts = [p["text"] for p in passages] + [q["question"] for q in questions]
    encoder = string_query_encoder(texts)
    index = PassageIndex.build(passages, encoder, verbose=0)
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), texts + [q["answer"] for q in questions],
        question_length=12, passage_length=16, answer_length=6,
    )
    keras.utils.set_random_seed(0)
    model = build_rag_question_answerer(
        index, encoder, preprocessor, generator="tiny", num_docs=2,
        train_query_encoder=train_query_encoder,
    )
    return model, encoder, index


def _fit(model, kb, epochs=2, **kwargs):
    _, questions = kb
    questions = [q for q in questions if q["country"] in COUNTRIES][:16]
    return model.fit([q["question"] for q in questions], [q["answer"] for q in questions],
                     batch_size=8, epochs=epochs, verbose=0, **kwargs)


def test_frozen_encoder_has_no_optimizer_of_its_own(kb):
    model, encoder, _ = _model(kb, train_query_encoder=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in encoder.get_weights()]
    _fit(model, kb, epochs=1)
    assert model.query_encoder_optimizer is None
    assert all(np.array_equal(a, b) for a, b in zip(before, encoder.get_weights()))


def test_trainable_encoder_gets_a_tenth_of_the_learning_rate(kb):
    model, encoder, _ = _model(kb, train_query_encoder=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert float(model.query_encoder_optimizer.learning_rate) == pytest.approx(1e-3)
    before = encoder.get_weights()
    _fit(model, kb, epochs=1)
    moved = [np.abs(a - b).max() for a, b in zip(before, encoder.get_weights()) if a.size]
    assert max(moved) > 0  # It trains...
    # ...and with Adam each step moves a weight by about the learning rate.
    steps = int(model.query_encoder_optimizer.iterations)
    assert steps == 2 and max(moved) <= 1e-3 * steps * 1.5
    assert int(model.optimizer.iterations) == steps


def test_the_index_follows_the_trained_encoder(kb):
    model, encoder, index = _model(kb, train_query_encoder=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    _fit(model, kb, epochs=1)
    passages, _ = kb
    fresh = PassageIndex.build(passages, encoder, verbose=0)
    np.testing.assert_allclose(index.embeddings, fresh.embeddings, atol=1e-6)


def test_a_given_reindexer_is_not_doubled(kb):
    model, encoder, _ = _model(kb, train_query_encoder=True)
    reindexer = PassageReindexer(model.rag.retriever, encoder, every_n_epochs=1)
    assert model._with_reindexer([reindexer]) == [reindexer]
    (added,) = model._with_reindexer(None)
    assert isinstance(added, PassageReindexer)


def test_keras_file_keeps_both_optimizers(kb, tmp_path):
    model, _, index = _model(kb, train_query_encoder=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    _fit(model, kb, epochs=1)
    index.save(str(tmp_path / "kb"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.query_encoder_optimizer.iterations) == 2
    for saved, restored in zip(model.query_encoder_optimizer.variables,
                               loaded.query_encoder_optimizer.variables):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
