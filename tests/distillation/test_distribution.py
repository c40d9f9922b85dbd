"""1 replica vs. `MirroredStrategy` over 2 logical CPUs: same loss, same step.

Checked for the Distiller with the forward KL and JSD(0.5), and for every
distillation loss on its own (each replica returns its share of the global
token-count mean; the shares add up to the one-replica loss).

Logical devices must be configured before TensorFlow initialises, so the
comparison runs in a fresh Python process.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r'''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
import keras
import numpy as np
from keras_ragkd import Distiller
from keras_ragkd.distillation import losses

rng = np.random.default_rng(0)
lengths = np.array([6, 6, 6, 5, 6, 6, 4, 6, 1, 2, 1, 3, 2, 1, 1, 2])
valid = np.arange(6)[None, :] < lengths[:, None]
tokens = np.where(valid, rng.integers(1, 9, (16, 6)), 0).astype("int32")
labels = rng.integers(0, 9, (16, 6)).astype("int32")
weights = rng.uniform(0.5, 2.0, 16).astype("float32")


def sequence_model(width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(9, width, mask_zero=True)(inputs)
    hidden = keras.layers.Dense(width, activation="tanh")(hidden)
    return keras.Model(inputs, keras.layers.Dense(9)(hidden))


def run(strategy, distillation_loss):
    with strategy.scope():
        distiller = Distiller(
            sequence_model(16, 1), sequence_model(4, 2), alpha=0.3, temperature=2.0,
            distillation_loss=distillation_loss,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    data = tf.data.Dataset.from_tensor_slices((tokens, labels, weights)).batch(16)
    history = distiller.fit(data, epochs=2, verbose=0).history
    return {
        "replicas": strategy.num_replicas_in_sync,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "evaluate": distiller.evaluate(data, return_dict=True, verbose=0),
        "weights": [w.tolist() for w in distiller.student.get_weights()],
    }


LOSSES = {
    "forward_kl": losses.ForwardKL(),
    "reverse_kl": losses.ReverseKL(),
    "jsd": losses.GeneralizedJSD(beta=0.5),
    "top_k_tail_kl": losses.TopKTailKL(top_k=3),
}
teacher_logits = rng.normal(scale=3.0, size=(16, 6, 9)).astype("float32")
student_logits = rng.normal(scale=3.0, size=(16, 6, 9)).astype("float32")


def standalone_losses(strategy):
    data = tf.data.Dataset.from_tensor_slices(
        (teacher_logits, student_logits, weights, valid)
    ).batch(16)
    batch = next(iter(strategy.experimental_distribute_dataset(data)))

    def replica_loss(loss, teacher, student, weight, mask):
        return loss(teacher, student, sample_weight=weight, mask=mask, temperature=2.0)

    results = {}
    for name, loss in LOSSES.items():
        shares = strategy.run(tf.function(lambda *b: replica_loss(loss, *b)), args=batch)
        results[name] = float(strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None))
    return results


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one = {name: run(tf.distribute.get_strategy(), name) for name in ("forward_kl", "jsd")}
two = {name: run(mirrored, name) for name in ("forward_kl", "jsd")}
one["standalone"] = standalone_losses(tf.distribute.get_strategy())
two["standalone"] = standalone_losses(mirrored)
print("RESULT" + json.dumps([one, two]))
'''


@pytest.mark.slow
def test_one_and_two_replicas_agree():
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(l for l in completed.stdout.splitlines() if l.startswith("RESULT"))
    one, two = json.loads(line[len("RESULT"):])
    assert one["standalone"].keys() == two["standalone"].keys()
    for name, value in one["standalone"].items():
        assert value > 0
        np.testing.assert_allclose(two["standalone"][name], value, rtol=1e-5, err_msg=name)
    for loss in ("forward_kl", "jsd"):
        a, b = one[loss], two[loss]
        assert (a["replicas"], b["replicas"]) == (1, 2)
        for name, values in a["history"].items():
            np.testing.assert_allclose(
                b["history"][name], values, rtol=1e-4, atol=1e-7, err_msg=f"{loss} {name}"
            )
        for name, value in a["evaluate"].items():
            np.testing.assert_allclose(
                b["evaluate"][name], value, rtol=1e-4, atol=1e-7, err_msg=f"{loss} {name}"
            )
        for u, v in zip(a["weights"], b["weights"]):
            np.testing.assert_allclose(np.array(v), np.array(u), rtol=1e-5, atol=1e-6)
    # The two losses train differently (the loss is really plugged in).
    assert one["jsd"]["history"]["distillation_loss"] != one["forward_kl"]["history"]["distillation_loss"]
