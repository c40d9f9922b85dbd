"""Small real models and data shared by the distillation tests."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]: (x, y)."""
    data = load_digits()
    return data.data.astype("float32") / 16.0, data.target.astype("int32")


def _dense_classifier(width, num_classes=10, input_dim=64, seed=0, name=None):
    """A small MLP that outputs logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(width, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def _sequence_model(width, vocab=7, seed=0, mask_zero=True, name=None):
    """Token ids `(batch, time)` -> logits `(batch, time, vocab)`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(vocab, width, mask_zero=mask_zero)(inputs)
    hidden = keras.layers.Dense(width, activation="tanh", name="hidden")(hidden)
    outputs = keras.layers.Dense(vocab, name="logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="session")
def trained_teacher(digits):
    """A wide MLP trained briefly on digits (frozen by every Distiller)."""
    x, y = digits
    teacher = _dense_classifier(64, seed=1, name="teacher")
    teacher.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x, y, epochs=3, batch_size=128, verbose=0)
    return teacher


def _numpy_kd(teacher_logits, student_logits, temperature):
    """Reference T² · KL(softmax(t/T) || softmax(s/T)) over the last axis."""
    def log_softmax(z):
        z = z / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p = log_softmax(np.asarray(teacher_logits, "float64"))
    log_q = log_softmax(np.asarray(student_logits, "float64"))
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def _numpy_sparse_ce(labels, logits):
    """Reference sparse cross-entropy from logits, per position."""
    z = np.asarray(logits, "float64")
    z = z - z.max(-1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(log_q, labels[..., None].astype(int), -1)[..., 0]


@pytest.fixture(scope="session")
def dense_classifier():
    return _dense_classifier


@pytest.fixture(scope="session")
def sequence_model():
    return _sequence_model


@pytest.fixture(scope="session")
def numpy_kd():
    return _numpy_kd


@pytest.fixture(scope="session")
def numpy_sparse_ce():
    return _numpy_sparse_ce
