import itertools
import types

import keras
import numpy as np
import pytest

from keras_ragkd import training_budget as callbacks
from keras_ragkd.training_budget import TimeCosineDecay
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.training_budget import warmup_cosine


class RecordLearningRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


@pytest.fixture
def clock(monkeypatch):
    """Each reading of the clock is one second after the previous one."""
    ticks = itertools.count()
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks))))


def fit(optimizer, callback_list, epochs=100):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model.fit(np.ones((4, 2)), np.ones(4), batch_size=2, epochs=epochs, verbose=0,
                     callbacks=callback_list)


def test_time_limit_stops_after_the_budget_not_counting_the_first_batch(clock):
    history = fit("sgd", [TimeLimit(seconds=3)])
    # The clock is read once per batch: started after batch 1, >= 3 s at batch 4.
    assert len(history.history["loss"]) == 2


def test_time_cosine_decay_shape():
    decay = TimeCosineDecay(1.0, seconds=10, warmup_fraction=0.2, alpha=0.1)
    assert decay.rate_at(0.0) == 0.0
    assert decay.rate_at(0.1) == pytest.approx(0.5)
    assert decay.rate_at(0.2) == pytest.approx(1.0)
    assert decay.rate_at(0.6) == pytest.approx(0.1 + 0.9 * 0.5)
    assert decay.rate_at(1.0) == pytest.approx(0.1)
    assert decay.rate_at(3.0) == pytest.approx(0.1)
    assert TimeCosineDecay(2.0, seconds=1).rate_at(0.0) == 2.0


def test_time_cosine_decay_anneals_the_optimizer_during_fit(clock):
    recorder = RecordLearningRate()
    history = fit(keras.optimizers.SGD(0.5),
                  [TimeLimit(8), TimeCosineDecay(0.1, seconds=8), recorder])
    rates = recorder.rates
    assert rates[0] == pytest.approx(0.1)
    assert all(later < earlier for earlier, later in zip(rates[1:], rates[2:]))
    assert rates[-1] < 0.01
    assert history.history["learning_rate"][-1] == pytest.approx(rates[-1])
    # A second fit starts a new schedule.
    recorder.rates = []
    fit(keras.optimizers.SGD(0.5), [TimeLimit(8), TimeCosineDecay(0.1, seconds=8), recorder])
    assert recorder.rates[0] == pytest.approx(0.1)


def test_time_cosine_decay_errors_and_config():
    with pytest.raises(ValueError, match="Received: seconds=0"):
        TimeCosineDecay(0.1, seconds=0)
    with pytest.raises(ValueError, match="Received: warmup_fraction=1"):
        TimeCosineDecay(0.1, seconds=1, warmup_fraction=1)
    with pytest.raises(ValueError, match="Received: learning_rate=-1"):
        TimeCosineDecay(-1, seconds=1)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(TypeError, match="not settable"):
        fit(keras.optimizers.SGD(schedule), [TimeCosineDecay(0.1, seconds=1)], epochs=1)
    decay = TimeCosineDecay(0.1, seconds=5, warmup_fraction=0.1, alpha=0.2)
    assert TimeCosineDecay(**decay.get_config()).get_config() == decay.get_config()


@pytest.mark.parametrize("callback", [TimeLimit(7), TimeCosineDecay(0.1, 5, 0.1, 0.2)])
def test_callbacks_round_trip_through_keras_serialization(callback):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is type(callback)
    assert restored.get_config() == callback.get_config()


def test_warmup_cosine_rises_then_decays_to_zero():
    schedule = warmup_cosine(2e-3, 200)
    rates = [float(schedule(step)) for step in (0, 5, 10, 100, 200)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-3)
    assert rates[2] == pytest.approx(2e-3) and 0 < rates[3] < 2e-3 and rates[4] == 0.0
    for bad in (dict(learning_rate=0.0, steps=10), dict(learning_rate=1e-3, steps=0),
                dict(learning_rate=1e-3, steps=10, warmup=1.0)):
        with pytest.raises(ValueError, match="Received"):
            warmup_cosine(**bad)
