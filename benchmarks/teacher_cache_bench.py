"""TeacherCache at LLM scale: build time, bytes per token and peak memory.

A synthetic teacher with SmolLM2's vocabulary (embedding → Dense(49,152))
over `N` sequences of `T = 16` tokens, cached with top-k 16/32/64 (plus the
tail mass) and with full logits, side by side in one run; the teacher's
forward pass alone is the floor. Writes `benchmarks/results/teacher_cache_bench.json`.

    .venv/bin/python benchmarks/teacher_cache_bench.py
"""

import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.distillation import TeacherCache

SEQUENCE_LENGTH, VOCABULARY = 16, 49152
RESULTS = os.path.join(os.path.dirname(__file__), "results", "teacher_cache_bench.json")


def synthetic_teacher():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    hidden = keras.layers.Embedding(1000, 64)(tokens)
    return keras.Model(tokens, keras.layers.Dense(VOCABULARY)(hidden))


def token_batches(count, batch_size=16):
    x = np.random.default_rng(0).integers(0, 1000, (count, SEQUENCE_LENGTH)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, x)).batch(batch_size)


def memory_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024


def forward_seconds(model, dataset, repeats=2):
    forward = tf.function(model, reduce_retracing=True)
    for x, _ in dataset.take(1):
        forward(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for x, _ in dataset:
            forward(x).numpy()
        times.append(time.perf_counter() - started)
    return min(times)


def measure_build(model, folder, count, top_k, dtype, repeats=2):
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # Resets the peak-RSS mark.
    before = memory_bytes("VmRSS")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        cache = TeacherCache.build(
            model, token_batches(count), folder, top_k=top_k,
            temperature=None if top_k is None else 2.0, dtype=dtype,
            overwrite=True, verbose=0,
        )
        times.append(time.perf_counter() - started)
    row = {
        "N": count, "top_k": top_k, "dtype": dtype, "build_s": round(min(times), 3),
        "bytes_per_token": round(cache.bytes_per_token, 2), "nbytes": cache.nbytes,
        "full_float32_bytes": count * SEQUENCE_LENGTH * VOCABULARY * 4,
        "peak_rss_growth_MB": round((memory_bytes("VmHWM") - before) / 2**20, 1),
    }
    shutil.rmtree(folder)
    return row


def main():
    model = synthetic_teacher()
    scratch = tempfile.mkdtemp()
    TeacherCache.build(model, token_batches(16), scratch + "/warm", top_k=8,
                       temperature=1.0, verbose=0)
    results = {"forward_only_s_N256": forward_seconds(model, token_batches(256)), "runs": []}
    runs = [(256, k, "float32") for k in (16, 32, 64)]
    runs += [(256, 32, "float16"), (32, None, "float32"), (32, None, "float16")]
    for count, top_k, dtype in runs:
        row = measure_build(model, f"{scratch}/cache", count, top_k, dtype)
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
    shutil.rmtree(scratch)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
