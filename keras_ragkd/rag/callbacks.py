"""Training callbacks for bounded-time runs."""

import time

import keras


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TimeLimit(keras.callbacks.Callback):
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

    def __init__(self, seconds):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"`seconds` must be positive. Received: seconds={seconds}")
        self.seconds = float(seconds)
        self.started = None

    def on_train_begin(self, logs=None):
        self.started = None

    def on_train_batch_end(self, batch, logs=None):
        if self.started is None:
            self.started = time.monotonic()
        elif time.monotonic() - self.started >= self.seconds:
            self.model.stop_training = True

    def get_config(self):
        return {"seconds": self.seconds}
