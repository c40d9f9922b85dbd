"""RAG → RAG distillation through the model contract: no magic numbers.

A `RagQuestionAnswerer` declares that it outputs log-probabilities
(`output_kind`) and its preprocessor declares the padding label
(`padding_id`); the `Distiller` reads both, so a RAG teacher and a smaller
RAG student are distilled without `ignore_class=0` or any other constant.
"""

import keras
import numpy as np
import pytest

from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.distillation import Distiller
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.models import load_minilm_tokenizer

COUNTRIES = ["France", "Germany", "Peru", "Japan"]
TINY = {"hidden_dim": 8, "num_heads": 2, "intermediate_dim": 8,
        "num_encoder_layers": 1, "num_decoder_layers": 1}


def _query_encoder(vocabulary_size, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocabulary_size, 16, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])


@pytest.fixture(scope="module")
def rag_pair():
    passages = country_passages(COUNTRIES)
    questions = [q for q in country_questions("all") if q["country"] in COUNTRIES][:32]
    texts = [p["text"] for p in passages]
    texts += [q[key] for q in questions for key in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), texts, question_length=12, passage_length=16,
        answer_length=6, query_as_text=False,
    )
    encoder = _query_encoder(preprocessor.vocabulary_size)
    passage_ids = preprocessor.tokenize_passages(texts[: len(passages)])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    keras.utils.set_random_seed(1)
    teacher = build_rag_question_answerer(
        index, encoder, preprocessor, generator="tiny", num_docs=2, backend="tensor"
    )
    keras.utils.set_random_seed(2)
    student = build_rag_question_answerer(
        index, encoder, preprocessor, generator=TINY, num_docs=1, backend="tensor"
    )
    return teacher, student, preprocessor, questions


def test_rag_models_declare_log_probabilities_and_padding(rag_pair):
    teacher, student, preprocessor, _ = rag_pair
    distiller = Distiller(teacher, student, temperature=2.0)
    assert distiller.teacher_output_kind == "log_probabilities"
    assert distiller.student_output_kind == "log_probabilities"
    distiller.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert distiller.ignore_class == preprocessor.padding_id


@pytest.mark.slow
def test_rag_to_rag_distillation_reads_the_padding_from_the_models(rag_pair):
    teacher, student, preprocessor, questions = rag_pair
    x = [q["question"] for q in questions]
    y = [q["answer"] for q in questions]
    auto = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    auto.compile(optimizer=keras.optimizers.Adam(5e-3))
    explicit = Distiller(teacher, student, alpha=0.5, temperature=2.0,
                         ignore_class=preprocessor.padding_id)
    explicit.compile(optimizer=keras.optimizers.Adam(5e-3))
    a = auto.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    b = explicit.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert a == b
    # A few steps of pure distillation from raw strings lower the loss.
    auto.alpha = 0.0
    logs = auto.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert logs["distillation_loss"][-1] < logs["distillation_loss"][0]
    assert teacher.rag.generator.trainable is False
