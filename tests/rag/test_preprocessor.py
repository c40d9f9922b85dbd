import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag.preprocessor import END_ID
from keras_ragkd.rag.preprocessor import START_ID
from keras_ragkd.models import load_minilm_tokenizer


@pytest.fixture(scope="module")
def preprocessor(kb):
    passages, questions = kb
    texts = [p["text"] for p in passages] + [q["answer"] for q in questions] + ["Bogotá"]
    return RagPreprocessor.from_texts(load_minilm_tokenizer(), texts, answer_length=8)


def test_answers_round_trip_through_ids(preprocessor, kb):
    _, questions = kb
    answers = sorted({q["answer"] for q in questions})
    x, labels = preprocessor(tf.constant(["q"] * len(answers)), tf.constant(answers))
    decoded = preprocessor.detokenize(labels).tolist()
    assert decoded == [a.lower() for a in answers]
    assert np.all(x["decoder_token_ids"].numpy()[:, 0] == START_ID)
    assert np.all((labels.numpy() == END_ID).sum(-1) == 1)
    # Decoder inputs are the labels shifted right.
    np.testing.assert_array_equal(x["decoder_token_ids"].numpy()[:, 1:], np.where(labels.numpy()[:, :-1] == END_ID, 0, labels.numpy()[:, :-1]))


def test_accents_are_stripped_and_unknown_words_map_to_unk(preprocessor):
    _, labels = preprocessor(tf.constant(["q", "q"]), tf.constant(["Bogotá", "Zyzzyva"]))
    accented, unknown = preprocessor.detokenize(labels).tolist()
    assert accented == "bogota"
    assert "[UNK]" in unknown


def test_full_vocabulary_reads_words_outside_the_training_texts():
    full = RagPreprocessor.from_tokenizer(load_minilm_tokenizer(), answer_length=8)
    assert full.vocabulary_size == 30522
    assert full.vocabulary_ids[:4] == [0, 100, 101, 102]
    _, labels = full(tf.constant(["q"]), tf.constant(["Zyzzyva"]))
    assert full.detokenize(labels).tolist() == ["zyzzyva"]


def test_runs_in_tf_data_and_config_round_trips(preprocessor):
    dataset = tf.data.Dataset.from_tensor_slices((["What is the capital of Peru?"], ["Lima"]))
    x, y = next(iter(dataset.batch(1).map(preprocessor)))
    assert x["question_token_ids"].shape == (1, preprocessor.question_length)
    assert x["query"].dtype == tf.string
    restored = RagPreprocessor.from_config(preprocessor.get_config())
    restored.tokenizer.set_vocabulary(preprocessor.tokenizer.vocabulary)
    x2, y2 = restored(tf.constant(["What is the capital of Peru?"]), tf.constant(["Lima"]))
    np.testing.assert_array_equal(x2["question_token_ids"], x["question_token_ids"])
    np.testing.assert_array_equal(y2, y)


def test_validation():
    with pytest.raises(ValueError, match="Received: answer_length=1"):
        RagPreprocessor(load_minilm_tokenizer(), [0, 100, 101, 102, 200], answer_length=1)
    assert keras.saving.get_registered_object("keras_ragkd>RagPreprocessor") is RagPreprocessor
