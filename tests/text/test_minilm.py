import os

import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer

from keras_ragkd.text import load_minilm_tokenizer
from keras_ragkd.text import minilm_preset_path

SENTENCES = [
    "This is an example sentence",
    "What is the capital of Côte d'Ivoire?",
    "Kabul is the capital of which country?",
]


@pytest.fixture(scope="module")
def reference_tokenizer():
    """Hugging Face's own tokenizer for the same folder (an independent check)."""
    tokenizer = Tokenizer.from_file(
        os.path.join(minilm_preset_path(), "tokenizer.json")
    )
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def test_preset_folder_holds_the_weights():
    folder = minilm_preset_path()
    for name in ("vocab.txt", "config.json", "model.safetensors"):
        assert os.path.isfile(os.path.join(folder, name))


def test_token_ids_match_hugging_face_tokenizer(reference_tokenizer):
    tokenizer = load_minilm_tokenizer()
    assert tokenizer.vocabulary_size() == 30522
    # Eager calls on a Python list return Python lists of ids.
    for sentence, ids in zip(SENTENCES, tokenizer(SENTENCES)):
        expected = reference_tokenizer.encode(sentence).ids
        # The reference adds [CLS] ... [SEP]; the keras-hub tokenizer does not.
        assert [tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id] == expected


def test_fixed_sequence_length_pads_and_truncates():
    tokenizer = load_minilm_tokenizer(sequence_length=4)
    token_ids = np.asarray(tokenizer(["Paris", "The capital of France is Paris."]))
    assert token_ids.shape == (2, 4)
    assert token_ids[0, 1:].tolist() == [0, 0, 0]
    assert (token_ids[1] > 0).all()


def test_tokenizer_runs_in_tf_data_graph():
    tokenizer = load_minilm_tokenizer(sequence_length=6)
    dataset = tf.data.Dataset.from_tensor_slices(SENTENCES).batch(2).map(tokenizer)
    batches = [batch.numpy() for batch in dataset]
    np.testing.assert_array_equal(
        np.concatenate(batches), np.asarray(tokenizer(SENTENCES))
    )


@pytest.mark.parametrize("sequence_length", [0, -3, 2.5, True])
def test_bad_sequence_length_is_refused(sequence_length):
    with pytest.raises(ValueError, match="Received: sequence_length="):
        load_minilm_tokenizer(sequence_length=sequence_length)
