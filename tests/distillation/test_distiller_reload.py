"""A `.keras` reload of a `Distiller` is silent and continues training identically.

The teacher was compiled and trained with its own Adam (10 variables), and
the student compiled with an optimizer it never used: before the fix the
reload warned "Skipping variable loading for optimizer 'adam', because it has
2 variables whereas the saved optimizer has 10" (and "... 10 variables
whereas the saved optimizer has 2" for the student), about optimizers that
are not the Distiller's.
"""

import logging
import warnings

import keras
import numpy as np
import pytest

from keras_ragkd import Distiller


def _mlp(width, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(width, activation="tanh"), keras.layers.Dense(3)]
    )


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("student_compiled", [False, True])
def test_reload_is_silent_and_continues_identically(tmp_path, caplog, student_compiled):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, 64)
    teacher = _mlp(16, 0)
    teacher.compile(optimizer="adam", loss=_loss())
    teacher.fit(x, y, batch_size=16, verbose=0)
    student = _mlp(4, 1)
    if student_compiled:
        student.compile(optimizer="adam", loss=_loss())
    distiller = Distiller(teacher, student, alpha=0.3, temperature=2.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, batch_size=16, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        restored = keras.saving.load_model(path)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert messages == []

    assert restored.compiled and not restored.teacher.trainable
    saved_state = [v.numpy() for v in distiller.optimizer.variables]
    restored_state = [v.numpy() for v in restored.optimizer.variables]
    assert len(restored_state) == len(saved_state) == 2 + 2 * len(student.trainable_weights)
    for a, b in zip(restored_state, saved_state):
        np.testing.assert_array_equal(a, b)
    # Both continue on the same batches: same losses, same weights.
    after = [
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        for model in (distiller, restored)
    ]
    assert after[0] == after[1]
    for a, b in zip(distiller.student.get_weights(), restored.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations.numpy()) == 12
