import keras
import numpy as np
import pytest

from keras_ragkd import DistillationScheduler
from keras_ragkd import Distiller


def test_scheduler_sets_values_per_epoch_and_logs_them(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    distiller = Distiller(trained_teacher, dense_classifier(8))
    distiller.compile(optimizer="sgd")
    scheduler = DistillationScheduler(
        alpha=lambda epoch: 0.1 * (epoch + 1), temperature=lambda epoch: 4.0 - epoch
    )
    history = distiller.fit(
        x[:128], y[:128], epochs=3, batch_size=64, callbacks=[scheduler], verbose=0
    ).history
    np.testing.assert_allclose(history["alpha"], [0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(history["temperature"], [4.0, 3.0, 2.0])
    # The next step really uses the assigned values: with alpha = 1 the
    # loss is the student loss alone.
    one = DistillationScheduler(alpha=lambda epoch: 1.0)
    logs = distiller.fit(
        x[:64], y[:64], batch_size=64, callbacks=[one], verbose=0
    ).history
    assert logs["loss"][0] == pytest.approx(logs["student_loss"][0], rel=1e-6)


def test_per_batch_schedule_uses_the_global_step(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    distiller = Distiller(trained_teacher, dense_classifier(8))
    distiller.compile(optimizer="sgd")
    seen = []

    def alpha(step):
        seen.append(step)
        return 0.5

    distiller.fit(
        x[:128], y[:128], epochs=2, batch_size=64, verbose=0,
        callbacks=[DistillationScheduler(alpha=alpha, per_batch=True)],
    )
    assert seen == [0, 1, 2, 3]


def test_scheduler_config_and_bad_input():
    scheduler = DistillationScheduler(alpha=keras.activations.sigmoid, per_batch=True)
    restored = DistillationScheduler.from_config(scheduler.get_config())
    assert restored.alpha_schedule is keras.activations.sigmoid and restored.per_batch
    with pytest.raises(ValueError, match="Received: alpha=None, temperature=None"):
        DistillationScheduler()
    with pytest.raises(TypeError, match="Received: alpha=0.5"):
        DistillationScheduler(alpha=0.5)


def test_scheduled_value_outside_range_is_refused(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    distiller = Distiller(trained_teacher, dense_classifier(8))
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="Received: temperature=0.0"):
        distiller.fit(
            x[:64], y[:64], verbose=0,
            callbacks=[DistillationScheduler(temperature=lambda epoch: 0.0)],
        )
