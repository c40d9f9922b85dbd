"""Resuming an interrupted `fit` at the step it reached, not at its epoch.

`keras.callbacks.BackupAndRestore(save_freq=N)` restores the weights of the
last backup but restarts that backup's epoch from its first batch, so a run
killed mid-epoch trains again on the batches it had already seen (with
weights that have learned from them). `StepBackupAndRestore` also records
the step within the epoch and the epoch's metric states; a restarted `fit`
passes over the batches already trained on (it reads them from the data,
which must give the same batches in the same order every epoch, and does not
train on them), so it makes the same updates an uninterrupted run makes, and
logs the same epoch metrics.

Each backup is one folder, `latest/`, written beside its previous version
and swapped in atomically (`keras_ragkd.io_utils`), so a process killed while
backing up leaves the previous backup whole.
"""

import os
import shutil

import keras
import numpy as np

from keras_ragkd.io_utils import read_json_record
from keras_ragkd.io_utils import write_folder
from keras_ragkd.io_utils import write_json
from keras_ragkd.validation import is_integer

BACKUP_FOLDER = "latest"
STATE_FILE = "training_state.json"
WEIGHTS_FILE = "model.weights.h5"
METRICS_FILE = "metrics.npz"
STATE_FORMAT = "keras_ragkd.step_backup.v1"


class StepBackupAndRestore(keras.callbacks.Callback):
    """`BackupAndRestore` that resumes at the step, not the epoch.

    Backs up the model's weights (the optimizer's state included), the epoch,
    the steps done in it and the epoch's metric states every `save_freq`
    steps and at the end of every epoch. A `fit` started again with this
    callback and the same arguments restores them, and passes over the
    steps of that epoch already done without training on them: the batches
    are read and dropped, so the data must yield the same batches in the
    same order every epoch (no reshuffling; a seeded `shuffle(...,
    reshuffle_each_iteration=False)` is fine), and the model must draw no
    random numbers outside its layers. The backup is deleted when `fit`
    finishes (unless `delete_checkpoint=False`).

    Args:
        backup_dir: folder for the backup (created; used by this run only).
        save_freq: `"epoch"`, or back up every `save_freq` training steps.
        delete_checkpoint: bool, delete the backup when `fit` completes.

    Example:

    >>> import tempfile, numpy as np, keras
    >>> class Interrupt(keras.callbacks.Callback):
    ...     def on_train_batch_end(self, batch, logs=None):
    ...         if self.model.optimizer.iterations.numpy() == 5:
    ...             raise RuntimeError("interrupted")
    >>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = StepBackupAndRestore(tempfile.mkdtemp(), save_freq=1)
    >>> try:
    ...     model.fit(x, y, batch_size=2, epochs=3, callbacks=[backup, Interrupt()],
    ...               verbose=0)
    ... except RuntimeError:
    ...     pass
    >>> history = model.fit(x, y, batch_size=2, epochs=3, callbacks=[backup], verbose=0)
    >>> history.epoch, int(model.optimizer.iterations.numpy())
    ([1, 2], 12)
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError(f"Expected a backup folder. Received: backup_dir={backup_dir!r}")
        if save_freq != "epoch" and not is_integer(save_freq):
            raise ValueError(
                'Expected `save_freq="epoch"` or a positive number of steps. '
                f"Received: save_freq={save_freq!r}"
            )
        self.backup_dir = os.path.abspath(os.fspath(backup_dir))
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)
        self._epoch = 0
        self._steps_since_save = 0
        self._resume = None  # (epoch, steps done in it, metric values) to restore.
        self._train_function = None
        self._steps_to_skip = 0

    @property
    def _backup(self):
        return os.path.join(self.backup_dir, BACKUP_FOLDER)

    # Restoring.

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "StepBackupAndRestore needs a built model (call it on a batch "
                f"first). Received: model={self.model.name!r} (unbuilt)"
            )
        self._steps_since_save = 0
        state = self._read_state()
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self._backup, WEIGHTS_FILE))
        self.model._initial_epoch = state["epoch"]
        if state["step"]:
            with np.load(os.path.join(self._backup, METRICS_FILE), allow_pickle=False) as f:
                metric_values = [f[f"v{i}"] for i in range(len(f.files))]
            self._resume = (state["epoch"], state["step"], metric_values)

    def _read_state(self):
        path = os.path.join(self._backup, STATE_FILE)
        if not os.path.isfile(path):
            return None
        state = read_json_record(path, "StepBackupAndRestore state",
                                 "`StepBackupAndRestore`", STATE_FORMAT, version_key="format")
        if not all(is_integer(state.get(key), minimum=0) for key in ("epoch", "step")):
            raise ValueError(
                f"{path!r} is not a StepBackupAndRestore backup. Received: state={state!r:.200}"
            )
        return state

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._resume is not None and self._resume[0] == epoch:
            _, steps_done, metric_values = self._resume
            self._resume = None
            self._skip_steps(steps_done, metric_values)

    def _skip_steps(self, count, metric_values):
        """Makes the next `count` train-function calls consume their batch
        only; the first one also restores the epoch's metric states."""
        train_function = self._train_function = self.model.train_function
        self._steps_to_skip = count

        def skip_or_train(iterator):
            if self._steps_to_skip == 0:
                return train_function(iterator)
            # The TensorFlow trainer hands over the data iterator: read the
            # step's batches from it (and drop them).
            batches = [next(iterator) for _ in range(self.model.steps_per_execution)]
            if self._steps_to_skip == count:
                self._restore_metrics(batches[0], metric_values)
            self._steps_to_skip -= 1
            return self.model.get_metrics_result()

        self.model.train_function = skip_or_train

    def _restore_metrics(self, batch, metric_values):
        if len(_metric_variables(self.model)) != len(metric_values):
            # Compiled metrics are built on their first batch: build them
            # from this one as Keras does under a distribution strategy.
            self.model._symbolic_build(data_batch=batch)
        variables = _metric_variables(self.model)
        if len(variables) != len(metric_values):
            raise ValueError(
                "The backup's metrics differ from the model's (compile it as "
                f"before). Received: {len(metric_values)} saved metric variables, "
                f"the model has {len(variables)}"
            )
        for variable, value in zip(variables, metric_values):
            variable.assign(value)

    def _restore_train_function(self):
        if self._train_function is not None:
            self.model.train_function = self._train_function
            self._train_function = None

    # Backing up.

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch" or self._steps_to_skip:
            return
        self._steps_since_save += self.model.steps_per_execution
        if self._steps_since_save >= self.save_freq:
            self._steps_since_save = 0
            self._save(self._epoch, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._restore_train_function()
        self._steps_since_save = 0
        self._save(epoch + 1, 0)

    def _save(self, epoch, step):
        def write(staging):
            self.model.save_weights(os.path.join(staging, WEIGHTS_FILE))
            values = [np.asarray(v) for v in _metric_variables(self.model)]
            np.savez(os.path.join(staging, METRICS_FILE),
                     **{f"v{i}": value for i, value in enumerate(values)})
            write_json(os.path.join(staging, STATE_FILE),
                       {"format": STATE_FORMAT, "epoch": epoch, "step": step})

        write_folder(self._backup, write, kind="backup")

    def on_train_end(self, logs=None):
        self._restore_train_function()
        self.model._initial_epoch = None
        if self.delete_checkpoint and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)


def _metric_variables(model):
    return [variable for metric in model.metrics for variable in metric.variables]
