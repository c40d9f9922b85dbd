"""Training budgets as Keras callbacks: stop after a wall-clock time or a step
count, and a cosine learning-rate decay over the wall-clock budget.

General training tools, used by the demo, the benchmarks and the CLI for runs
that must fit a time budget; nothing here is specific to RAG or distillation.
"""

import math
import time

import keras

from keras_ragkd.validation import check_integer
from keras_ragkd.validation import check_number


class WallClockBudget(keras.callbacks.Callback):
    """Base of the callbacks that follow a wall-clock budget of `seconds`.

    The clock starts after the first batch of each `fit`, so tracing and
    compiling the train step do not count against the budget.

    Args:
        seconds: positive float, the training time budget.
    """

    def __init__(self, seconds):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"`seconds` must be positive. Received: seconds={seconds}")
        self.seconds = float(seconds)
        self.started = None

    def spent(self):
        """The share of the budget spent so far (0 before the clock starts)."""
        if self.started is None:
            return 0.0
        return (time.monotonic() - self.started) / self.seconds

    def on_train_begin(self, logs=None):
        self.started = None

    def on_train_batch_end(self, batch, logs=None):
        if self.started is None:
            self.started = time.monotonic()

    def get_config(self):
        return {"seconds": self.seconds}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TimeLimit(WallClockBudget):
    """Stops training once `seconds` of wall time have passed.

    The clock starts after the first batch, so tracing and compiling the
    train step do not count against the budget. Checked after every batch, so
    a run ends within one step of the limit, whatever `epochs` says.

    Args:
        seconds: positive float, the training time budget.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((8, 2)), np.ones(8), epochs=1000, verbose=0,
    ...                     callbacks=[TimeLimit(seconds=0.5)])
    >>> len(history.history["loss"]) < 1000
    True
    """

    def on_train_batch_end(self, batch, logs=None):
        if self.spent() >= 1.0:
            self.model.stop_training = True
        super().on_train_batch_end(batch, logs)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TimeCosineDecay(WallClockBudget):
    """Anneals the learning rate along a cosine over a wall-clock budget.

    `keras.optimizers.schedules.CosineDecay` needs the number of steps in
    advance; a run bounded by `TimeLimit` does not know it. This callback
    sets the optimizer's learning rate before every batch from the fraction
    of `seconds` already spent: a linear warm-up from 0 over the first
    `warmup_fraction`, then a cosine from `learning_rate` down to
    `alpha * learning_rate` at the end of the budget (and held there). Like
    `TimeLimit`, the clock starts after the first batch, so tracing does not
    count. Each `fit` call starts a new schedule; the epoch logs get the
    current `"learning_rate"`.

    Args:
        learning_rate: positive float, the peak learning rate.
        seconds: positive float, the budget (pass `TimeLimit`'s).
        warmup_fraction: float in `[0, 1)`, the share of the budget spent
            warming up.
        alpha: float in `[0, 1]`, the final rate as a fraction of the peak.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> history = model.fit(np.ones((8, 2)), np.ones(8), epochs=1000, verbose=0,
    ...                     callbacks=[TimeLimit(0.5), TimeCosineDecay(0.1, 0.5)])
    >>> history.history["learning_rate"][-1] < 0.01
    True
    """

    def __init__(self, learning_rate, seconds, warmup_fraction=0.0, alpha=0.0):
        super().__init__(seconds)
        self.learning_rate = check_number(
            "learning_rate", learning_rate, low=0, low_inclusive=False
        )
        self.warmup_fraction = check_number(
            "warmup_fraction", warmup_fraction, 0, 1, high_inclusive=False
        )
        self.alpha = check_number("alpha", alpha, 0, 1)

    def rate_at(self, fraction):
        """The learning rate after `fraction` of the budget."""
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < self.warmup_fraction:
            return self.learning_rate * fraction / self.warmup_fraction
        progress = (fraction - self.warmup_fraction) / (1.0 - self.warmup_fraction)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.learning_rate * (self.alpha + (1.0 - self.alpha) * cosine)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.rate_at(self.spent())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate": self.learning_rate,
                "warmup_fraction": self.warmup_fraction,
                "alpha": self.alpha,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ragkd")
class StepLimit(keras.callbacks.Callback):
    """Stops training after `steps` batches, across epochs.

    The step-matched counterpart of `TimeLimit`: a student trained for as
    many steps as another one took in its time budget.

    Args:
        steps: positive int, batches to train for.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 1)), np.ones((8, 1)), batch_size=2,
    ...                     epochs=10, verbose=0, callbacks=[StepLimit(6)])
    >>> len(history.history["loss"])  # 4 steps per epoch: stopped in epoch 2
    2
    """

    def __init__(self, steps):
        super().__init__()
        self.steps, self.done = int(steps), 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True

    def get_config(self):
        return {"steps": self.steps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def warmup_cosine(learning_rate, steps, warmup=0.05):
    """A step budget's learning rate: a linear warm-up, then cosine decay to 0.

    Args:
        learning_rate: positive float, the rate at the end of the warm-up.
        steps: positive int, the training steps of the budget.
        warmup: float in [0, 1), the share of `steps` spent warming up (at
            least one step).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:

    >>> schedule = warmup_cosine(1e-3, 100)
    >>> [round(float(schedule(step)), 6) for step in (0, 5, 100)]
    [0.0, 0.001, 0.0]
    """
    check_number("learning_rate", learning_rate, low=0, low_inclusive=False)
    check_integer("steps", steps)
    check_number("warmup", warmup, 0, 1, high_inclusive=False)
    warmup_steps = max(1, int(steps * warmup))
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps - warmup_steps), warmup_target=learning_rate,
        warmup_steps=warmup_steps)
