"""A `fit` killed with SIGKILL mid-epoch resumes at its step and finishes as
an uninterrupted run does.

Each test runs one training script three ways, each in a process forked from
a `multiprocessing` fork server that imported `keras_ragkd` once: through
to the end (the reference); killed with SIGKILL at a random moment in the
middle of an epoch; started again with the same backup folder, to the end.
The resumed run must make exactly the reference's number of optimizer steps
and end with its weights and its last epoch's logged metrics. Keras' own
`BackupAndRestore(save_freq=1)`, interrupted the same way (in this process,
by an exception), restarts the interrupted epoch from its first batch: it
makes more steps than the reference and ends elsewhere.
"""

import json
import multiprocessing
import os
import random
import signal
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_ragkd.resume import StepBackupAndRestore

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["keras_ragkd"])

# Float32 training on CPU, replayed on the same batches: the resumed run
# matches the reference to rounding (measured here: bitwise identical, for the
# Distiller killed after step 39 of 64 and the RAG model after step 14 of 30).
ATOL = 1e-5

TRAINER = """
import json
import os
import keras
import numpy as np
from keras_ragkd.resume import StepBackupAndRestore

class LogSteps(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        with open(LOG, "a") as f:
            f.write(f"{int(self.model.optimizer.iterations.numpy())}\\n")

def run():
    model, fit_args = setup()
    backup = [] if BACKUP is None else [StepBackupAndRestore(BACKUP, save_freq=1)]
    history = model.fit(callbacks=backup + [LogSteps()], verbose=0, **fit_args)
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(WEIGHTS_OF(model))}
    np.savez(OUT + ".npz", **weights)
    logs = {key: float(values[-1]) for key, values in history.history.items()}
    with open(OUT + ".json", "w") as f:
        json.dump({"logs": logs, "epochs": history.epoch,
                   "iterations": int(model.optimizer.iterations.numpy())}, f)

run()
"""

DISTILLER = """
import tensorflow as tf
from sklearn.datasets import load_digits
from keras_ragkd.distillation import Distiller

EPOCHS, STEPS_PER_EPOCH = 4, 16

def setup():
    data = load_digits()
    x, y = data.data[:512].astype("float32") / 16.0, data.target[:512].astype("int32")
    keras.utils.set_random_seed(1)
    teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(10)])
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(10)])
    distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    distiller.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 64)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        512, seed=0, reshuffle_each_iteration=False).batch(32)
    return distiller, dict(x=dataset, epochs=EPOCHS, shuffle=False)

WEIGHTS_OF = lambda distiller: distiller.student.weights
"""

RAG = """
from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.models import load_minilm_tokenizer

COUNTRIES = ["France", "Japan", "Peru"]
EPOCHS, BATCH_SIZE = 3, 4

def setup():
    passages = country_passages(COUNTRIES)
    questions = [q for q in country_questions("all") if q["country"] in COUNTRIES]
    texts = [p["text"] for p in passages]
    texts += [q[key] for q in questions for key in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), texts, question_length=10, passage_length=12,
        answer_length=6, query_as_text=False,
    )
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(preprocessor.vocabulary_size, 8, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])
    token_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(token_ids)))
    model = build_rag_question_answerer(
        index, encoder, preprocessor, generator="tiny", num_docs=2, dropout=0.0
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    return model, dict(x=[q["question"] for q in questions], y=[q["answer"] for q in questions],
                       batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False)

WEIGHTS_OF = lambda model: model.weights
"""


def _steps(log):
    if not os.path.exists(log):
        return []
    return [int(line) for line in open(log).read().split()]


def _run(source, tmp_path, name, backup=None, kill_after_step=None):
    """Runs the trainer in a forked process; with `kill_after_step`, kills it
    with SIGKILL a random moment (within one step) after it logged that step."""
    log, out = str(tmp_path / f"{name}.log"), str(tmp_path / name)
    namespace = {"LOG": log, "OUT": out, "BACKUP": backup}
    script = textwrap.dedent(TRAINER.replace("run()\n", "")) + textwrap.dedent(source)
    script += "\nrun()\n"
    process = _CONTEXT.Process(target=exec, args=(script, namespace), daemon=True)
    process.start()
    try:
        if kill_after_step is None:
            process.join(300)
            assert process.exitcode == 0, f"{name} exited with {process.exitcode}"
            with np.load(out + ".npz", allow_pickle=False) as weights:
                arrays = [weights[f"w{i}"] for i in range(len(weights.files))]
            with open(out + ".json") as f:
                return arrays, json.load(f)
        deadline = time.monotonic() + 300
        while not _steps(log) or _steps(log)[-1] < kill_after_step:
            assert process.is_alive(), f"{name} ended before step {kill_after_step}"
            assert time.monotonic() < deadline, f"{name} made no progress: {_steps(log)}"
            time.sleep(0.002)
        steps = _steps(log)
        time.sleep(random.uniform(0, 0.01))
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
        assert process.exitcode == -signal.SIGKILL
        return _steps(log)
    finally:
        if process.is_alive():
            process.kill()
            process.join(30)


def _kill_and_resume(source, tmp_path, epochs):
    """`(reference, resumed, kill step)`: weights and results of both runs."""
    reference = _run(source, tmp_path, "reference")
    steps_per_epoch = reference[1]["iterations"] // epochs
    assert steps_per_epoch * epochs == reference[1]["iterations"] and steps_per_epoch > 2
    # A step strictly inside an epoch after the first and before the last, so
    # that both epoch and step matter and the run is still going when killed.
    epoch = random.randrange(1, epochs - 1)
    kill_step = epoch * steps_per_epoch + random.randrange(1, steps_per_epoch - 1)
    backup = str(tmp_path / "backup")
    done = _run(source, tmp_path, "killed", backup, kill_after_step=kill_step)
    assert done[-1] < epochs * steps_per_epoch
    resumed = _run(source, tmp_path, "resumed", backup)
    assert not os.path.exists(backup)  # Deleted once the run completes.
    return reference, resumed, done[-1]


def _assert_same_run(reference, resumed):
    (ref_weights, ref), (weights, result) = reference, resumed
    assert result["iterations"] == ref["iterations"]
    for ref_w, w in zip(ref_weights, weights):
        np.testing.assert_allclose(w, ref_w, atol=ATOL)
    difference = max(float(np.abs(w - ref_w).max()) for ref_w, w in zip(ref_weights, weights))
    print(f"resumed vs uninterrupted: max |weight difference| = {difference:.3g}, "
          f"logs {result['logs']} vs {ref['logs']}")
    assert set(result["logs"]) == set(ref["logs"])
    for key, value in ref["logs"].items():
        np.testing.assert_allclose(result["logs"][key], value, atol=ATOL, rtol=1e-5)


@pytest.mark.slow
def test_distiller_fit_killed_mid_epoch_resumes_at_its_step(tmp_path):
    reference, resumed, killed_at = _kill_and_resume(DISTILLER, tmp_path, epochs=4)
    print(f"killed after step {killed_at} of 64")
    assert reference[1]["iterations"] == 64
    _assert_same_run(reference, resumed)


@pytest.mark.slow
def test_rag_fit_killed_mid_epoch_resumes_at_its_step(tmp_path):
    reference, resumed, killed_at = _kill_and_resume(RAG, tmp_path, epochs=3)
    print(f"killed after step {killed_at} of {reference[1]['iterations']}")
    _assert_same_run(reference, resumed)


# --- In this process: an exception interrupts `fit` (fast) ---


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at_step:
            raise RuntimeError("interrupted")


def _regression():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse", metrics=["mae"])
    return model


def _fit(model, callbacks):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(1, keepdims=True) ** 2
    return model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                     callbacks=callbacks)


@pytest.fixture(scope="module")
def uninterrupted():
    model = _regression()
    history = _fit(model, [])
    return model.get_weights(), history.history


# 8 steps per epoch: step 13 is inside the second epoch, 21 inside the last.
@pytest.mark.parametrize("callback, at_step", [
    ("StepBackupAndRestore", 13), ("StepBackupAndRestore", 21), ("keras.BackupAndRestore", 13),
])
def test_resuming_at_the_step_replays_no_batch(tmp_path, uninterrupted, callback, at_step):
    reference_weights, reference_logs = uninterrupted
    if callback == "StepBackupAndRestore":
        backup = StepBackupAndRestore(str(tmp_path / "backup"), save_freq=1)
    else:
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(_regression(), [backup, _Interrupt(at_step)])
    model = _regression()  # What a new process would build.
    history = _fit(model, [backup])
    iterations = int(model.optimizer.iterations.numpy())
    assert history.epoch == list(range(at_step // 8, 3))
    if callback == "keras.BackupAndRestore":
        # The interrupted epoch starts again from its first batch.
        assert iterations == 24 + at_step % 8
        assert max(float(np.abs(a - b).max())
                   for a, b in zip(model.get_weights(), reference_weights)) > 1e-3
        return
    assert iterations == 24
    for a, b in zip(model.get_weights(), reference_weights):
        np.testing.assert_allclose(a, b, atol=ATOL)
    for key, values in reference_logs.items():
        # The epoch's metrics include the steps done before the interruption.
        np.testing.assert_allclose(history.history[key][-1], values[-1], rtol=1e-5)
    assert not os.path.exists(tmp_path / "backup")


def test_a_backup_killed_while_saving_leaves_the_previous_one(tmp_path):
    """What a SIGKILL inside a backup leaves (the staging folder of a dead
    process beside `latest/`) is ignored on restore and cleared by the next
    backup."""
    import socket
    import subprocess

    backup_dir = tmp_path / "backup"
    with pytest.raises(RuntimeError):
        _fit(_regression(), [StepBackupAndRestore(str(backup_dir), save_freq=1), _Interrupt(5)])
    finished = subprocess.Popen(["true"])
    finished.wait()
    host = socket.gethostname().replace(".", "_")
    dead = backup_dir / f".latest.backup.{host}-{finished.pid}.abc123"
    dead.mkdir()
    (dead / "model.weights.h5").write_bytes(b"half")
    with open(backup_dir / "latest" / "training_state.json") as f:
        assert json.load(f) == {"format": "keras_ragkd.step_backup.v1", "epoch": 0, "step": 5}
    model = _regression()
    resumed = StepBackupAndRestore(str(backup_dir), save_freq=1, delete_checkpoint=False)
    assert _fit(model, [resumed]).epoch == [0, 1, 2]
    assert int(model.optimizer.iterations.numpy()) == 24
    assert sorted(os.listdir(backup_dir)) == ["latest"]


def test_step_backup_refuses_bad_arguments():
    with pytest.raises(ValueError, match="Received: save_freq=0"):
        StepBackupAndRestore("backup", save_freq=0)
    with pytest.raises(ValueError, match="Received: backup_dir=''"):
        StepBackupAndRestore("")
