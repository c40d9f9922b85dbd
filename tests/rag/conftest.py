"""Small real fixtures for the RAG tests: a slice of the countryinfo KB."""

import keras
import numpy as np
import pytest

from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.rag import CopyTransformerGenerator
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import RetrievalAugmentedGenerator
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.data import counterfactual_augment
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.models import load_minilm_tokenizer

COUNTRIES = ["France", "Germany", "Peru", "Japan", "Kenya", "Canada"]


@pytest.fixture(scope="session")
def kb():
    passages = country_passages(COUNTRIES)
    questions = [q for q in country_questions("all") if q["country"] in COUNTRIES]
    return passages, questions


@pytest.fixture(scope="session")
def token_preprocessor(kb):
    passages, questions = kb
    texts = [p["text"] for p in passages] + [q["question"] for q in questions]
    texts += [q["answer"] for q in questions] + ["Berlin"]
    return RagPreprocessor.from_texts(
        load_minilm_tokenizer(),
        texts,
        question_length=12,
        passage_length=16,
        answer_length=6,
        query_as_text=False,
    )


def token_query_encoder(vocabulary_size, dim=16, seed=0):
    """A tiny trainable query encoder on token ids (mean of embeddings)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocabulary_size, dim, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.UnitNormalization(),
        ]
    )


def tiny_generator(vocabulary_size, seed=0):
    keras.utils.set_random_seed(seed)
    return CopyTransformerGenerator(
        vocabulary_size,
        hidden_dim=16,
        num_encoder_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        intermediate_dim=32,
        max_sequence_length=32,
        dropout=0.0,
    )


def token_rag(preprocessor, passages, num_docs=3, k=None, backend="faiss",
              marginalization="token"):
    """A RAG layer over `passages` with token-id query encoder and tiny generator."""
    encoder = token_query_encoder(preprocessor.vocabulary_size)
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    return RetrievalAugmentedGenerator(
        encoder,
        PassageRetriever(index, k=k or num_docs, backend=backend),
        tiny_generator(preprocessor.vocabulary_size),
        passage_tokens=passage_ids,
        num_docs=num_docs,
        marginalization=marginalization,
        doc_score_scale=5.0,
    )


@pytest.fixture(scope="session")
def encoder():
    encoder = load_minilm_encoder(sequence_length=24)
    encoder.trainable = False
    return encoder


@pytest.fixture(scope="session")
def trained(kb, encoder):
    """A tiny RAG model trained for a few epochs on the 6-country slice.

    Half the passages carry another country's facts (counterfactual
    augmentation), so the model has to copy answers from the passages.
    """
    passages, questions = kb
    train_passages, train_questions = counterfactual_augment(
        passages, questions, COUNTRIES, fraction=0.5, seed=0
    )
    index = PassageIndex.build(train_passages, encoder, verbose=0)
    texts = [p["text"] for p in passages + train_passages]
    texts += [q[key] for q in questions + train_questions for key in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), texts, question_length=16, passage_length=24, answer_length=8
    )
    keras.utils.set_random_seed(0)
    model = build_rag_question_answerer(
        index, encoder, preprocessor, generator="tiny", num_docs=2, dropout=0.0
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = model.fit(
        [q["question"] for q in train_questions],
        [q["answer"] for q in train_questions],
        batch_size=16,
        epochs=12,
        verbose=0,
    )
    true_index = PassageIndex.build(passages, encoder, verbose=0)
    return model, history, index, model.with_index(true_index)
