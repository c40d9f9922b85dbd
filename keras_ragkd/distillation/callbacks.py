"""`DistillationScheduler`: schedules a Distiller's `alpha` and `temperature`."""

import keras


@keras.saving.register_keras_serializable(package="keras_ragkd")
class DistillationScheduler(keras.callbacks.Callback):
    """Sets `distiller.alpha` and/or `distiller.temperature` during training.

    Each schedule is a function of the epoch index (or, with
    `per_batch=True`, of the global training step) returning the new value.
    Values are assigned to the distiller's non-trainable variables, so the
    next step uses them without retracing or recompiling. They are also
    logged (as `alpha` and `temperature`) so `CSVLogger`/TensorBoard record
    the schedule.

    Args:
        alpha: `fn(epoch_or_step) -> float in [0, 1]`, or `None`.
        temperature: `fn(epoch_or_step) -> float > 0`, or `None`.
        per_batch: call the schedules before every batch with the global
            step instead of before every epoch with the epoch index.

    Example:

    >>> scheduler = DistillationScheduler(
    ...     alpha=lambda epoch: min(0.9, 0.1 + 0.2 * epoch),
    ...     temperature=lambda epoch: max(1.0, 4.0 - epoch),
    ... )
    """

    def __init__(self, alpha=None, temperature=None, per_batch=False):
        super().__init__()
        if alpha is None and temperature is None:
            raise ValueError(
                "Pass a schedule for `alpha`, `temperature` or both. "
                "Received: alpha=None, temperature=None"
            )
        for name, schedule in (("alpha", alpha), ("temperature", temperature)):
            if schedule is not None and not callable(schedule):
                raise TypeError(
                    f"`{name}` must be a function of the epoch (or step). "
                    f"Received: {name}={schedule!r}"
                )
        self.alpha_schedule = alpha
        self.temperature_schedule = temperature
        self.per_batch = per_batch
        self._step = 0

    def get_config(self):
        return {
            "alpha": keras.saving.serialize_keras_object(self.alpha_schedule),
            "temperature": keras.saving.serialize_keras_object(
                self.temperature_schedule
            ),
            "per_batch": self.per_batch,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("alpha", "temperature"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def _apply(self, index):
        if self.alpha_schedule is not None:
            self.model.alpha = float(self.alpha_schedule(index))
        if self.temperature_schedule is not None:
            self.model.temperature = float(self.temperature_schedule(index))

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        if not self.per_batch:
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_batch:
            self._apply(self._step)
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["alpha"] = float(self.model.alpha.numpy())
            logs["temperature"] = float(self.model.temperature.numpy())
