import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.pipelines import is_raw_text
from keras_ragkd.pipelines import preprocessed_dataset


def lengths(x, y=None, sample_weight=None):
    return keras.utils.pack_x_y_sample_weight({"length": tf.strings.length(x)}, y, sample_weight)


def test_raw_text_is_told_from_model_inputs():
    assert is_raw_text(["a", "b"]) and is_raw_text((["a"], ["b"])) and is_raw_text("a")
    assert is_raw_text(tf.data.Dataset.from_tensor_slices((["a"], ["b"])).batch(1))
    assert not is_raw_text(np.zeros((2, 3)))
    assert not is_raw_text(tf.data.Dataset.from_tensor_slices({"x": [1]}).batch(1))
    assert not is_raw_text([])


def test_preprocessed_dataset_batches_shuffles_and_passes_model_inputs_through():
    dataset = preprocessed_dataset(lengths, ["a", "bb", "ccc"], [1, 2, 3], batch_size=2,
                                   shuffle=True, seed=0)
    batches = [(x["length"].numpy().tolist(), y.numpy().tolist()) for x, y in dataset]
    assert [len(y) for _, y in batches] == [2, 1]
    assert all(x == y for x, y in batches)  # inputs and targets stay paired
    assert preprocessed_dataset(lengths, dataset) is dataset
    raw = tf.data.Dataset.from_tensor_slices((["ab"], [7])).batch(1)
    x, y = next(iter(preprocessed_dataset(lengths, raw)))
    assert x["length"].numpy().tolist() == [2] and y.numpy().tolist() == [7]
    with pytest.raises(ValueError, match="Received: y="):
        preprocessed_dataset(lengths, raw, y=[1])
