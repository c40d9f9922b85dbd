"""Benchmark: keras_ragkd `Distiller` vs. `keras.distillation.Distiller`.

Side by side, in one process, on identical teachers, students and data:

1. Training step time of our `Distiller` vs. Keras' built-in distiller
   configured correctly (`LogitsDistillation(temperature=T,
   loss=keras.losses.KLDivergence())`, `student_loss_weight=alpha`).
   Target ratio (ours / keras) <= 1.0.
2. Epoch time of distilling from a `TeacherCache` (no teacher forward pass)
   vs. plain `student.fit` on the same data. Target ratio <= 1.15.
3. Quality over several seeds on scikit-learn's bundled digits (real 8x8
   images): the teacher (a 256x256 MLP trained on the whole training split)
   and three identical tiny students (one 16-unit hidden layer) that see only
   a small labelled subset (150 images): from scratch, distilled with ours,
   distilled with Keras' built-in. Same alpha, T, optimizer, epochs. Also the
   student's size and inference speed relative to the teacher.

Writes `benchmarks/results/distiller_bench.json` and `distiller_bench.png`.

Usage:

    python benchmarks/distiller_bench.py            # full (~5-10 min, 2 cores)
    python benchmarks/distiller_bench.py --quick    # ~2 min
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_ragkd import Distiller  # noqa: E402
from keras_ragkd import TeacherCache  # noqa: E402
from results_io import save_figure  # noqa: E402
from results_io import write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ALPHA = 0.1
TEMPERATURE = 4.0
QUALITY_KEYS = (
    "teacher",
    "scratch",
    "distilled_ours",
    "distilled_keras",
    "distilled_keras_default_loss",
)


def load_data():
    digits = load_digits()
    x = digits.data.astype("float32") / 16.0
    return train_test_split(
        x, digits.target.astype("int32"), test_size=0.3, random_state=0,
        stratify=digits.target,
    )


def mlp(widths, seed, input_dim=64, num_classes=10, name=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(w, activation="relu") for w in widths]
    layers += [keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name=name)


def clone(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def hard_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def ours(teacher, student):
    distiller = Distiller(teacher, student, alpha=ALPHA, temperature=TEMPERATURE)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3))
    return distiller


def keras_builtin(teacher, student, kd_loss=None):
    """Keras' distiller; `kd_loss=None` is the correct KLDivergence instance."""
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=kd_loss or keras.losses.KLDivergence()
        ),
        student_loss_weight=ALPHA,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), loss=hard_loss())
    return distiller


def train_teacher(x, y, widths, seed, epochs):
    teacher = mlp(widths, seed, input_dim=x.shape[1], name="teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=hard_loss())
    teacher.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return teacher


def timed_epochs(model, dataset, repeats):
    """Seconds per epoch: min over `repeats` epochs after one warm-up epoch."""
    model.fit(dataset, epochs=1, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return min(times), times


def interleaved(models, dataset, repeats):
    """Times several models' epochs, alternating between them (fair on a busy CPU)."""
    for model in models.values():
        model.fit(dataset, epochs=1, verbose=0)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
    return times


def step_time_benchmark(x, y, quick):
    """Per-step time of ours vs. keras' Distiller (same teacher, student, data)."""
    rows = 8192 if quick else 32768
    reps = int(np.ceil(rows / len(x)))
    x_big, y_big = np.tile(x, (reps, 1))[:rows], np.tile(y, reps)[:rows]
    batch_size = 128
    dataset = tf.data.Dataset.from_tensor_slices((x_big, y_big)).batch(batch_size)
    dataset = dataset.cache().prefetch(tf.data.AUTOTUNE)
    teacher = mlp((512, 512), seed=0, name="teacher")
    student = mlp((32,), seed=1, name="student")
    models = {
        "ours": ours(teacher, clone(student)),
        "keras": keras_builtin(teacher, clone(student)),
    }
    times = interleaved(models, dataset, repeats=3 if quick else 7)
    steps = int(np.ceil(rows / batch_size))
    ours_step = min(times["ours"]) / steps
    keras_step = min(times["keras"]) / steps
    return {
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "teacher_widths": [512, 512],
        "student_widths": [32],
        "ours_step_ms": 1e3 * ours_step,
        "keras_step_ms": 1e3 * keras_step,
        "ratio_ours_over_keras": ours_step / keras_step,
        "target_ratio": 1.0,
        "epoch_seconds": times,
    }


def cache_benchmark(x, y, quick):
    """Epoch time: Distiller on a TeacherCache vs. plain student.fit."""
    rows = 16384 if quick else 65536
    reps = int(np.ceil(rows / len(x)))
    x_big, y_big = np.tile(x, (reps, 1))[:rows], np.tile(y, reps)[:rows]
    batch_size = 128
    dataset = tf.data.Dataset.from_tensor_slices((x_big, y_big)).batch(batch_size)
    teacher = mlp((512, 512), seed=0, name="teacher")
    student = mlp((32,), seed=1, name="student")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cache = TeacherCache.build(teacher, dataset, os.path.join(folder, "c"), verbose=0)
        build_seconds = time.perf_counter() - start
        cached = cache.attach(dataset)
        plain_data = dataset.prefetch(tf.data.AUTOTUNE)
        plain = clone(student)
        plain.compile(optimizer=keras.optimizers.Adam(3e-3), loss=hard_loss())
        offline = Distiller(None, clone(student), alpha=ALPHA, temperature=TEMPERATURE)
        offline.compile(optimizer=keras.optimizers.Adam(3e-3))
        live = ours(teacher, clone(student))
        repeats = 3 if quick else 7
        # Each model on its own data, alternating epochs.
        for model, data in ((plain, plain_data), (offline, cached), (live, plain_data)):
            model.fit(data, epochs=1, verbose=0)
        times = {"plain_student_fit": [], "distiller_teacher_cache": [], "distiller_live_teacher": []}
        for _ in range(repeats):
            for name, model, data in (
                ("plain_student_fit", plain, plain_data),
                ("distiller_teacher_cache", offline, cached),
                ("distiller_live_teacher", live, plain_data),
            ):
                start = time.perf_counter()
                model.fit(data, epochs=1, verbose=0)
                times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    return {
        "examples": rows,
        "batch_size": batch_size,
        "cache_build_seconds": build_seconds,
        "plain_epoch_s": best["plain_student_fit"],
        "cache_epoch_s": best["distiller_teacher_cache"],
        "live_teacher_epoch_s": best["distiller_live_teacher"],
        "ratio_cache_over_plain": best["distiller_teacher_cache"] / best["plain_student_fit"],
        "ratio_live_over_plain": best["distiller_live_teacher"] / best["plain_student_fit"],
        "target_ratio": 1.15,
        "epoch_seconds": times,
    }


def accuracy(model, x, y):
    return float((model.predict(x, batch_size=512, verbose=0).argmax(-1) == y).mean())


def inference_seconds(model, x, repeats=20):
    """Best time of one `model(x)` call on the whole test split (tf.function)."""
    forward = tf.function(lambda inputs: model(inputs, training=False))
    forward(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x).numpy()
        best = min(best, time.perf_counter() - start)
    return best


def quality_benchmark(x_train, y_train, x_test, y_test, seeds, epochs, labelled):
    runs = []
    for seed in seeds:
        teacher = train_teacher(x_train, y_train, (256, 256), seed, epochs=10)
        rng = np.random.default_rng(seed)
        subset = rng.choice(len(x_train), size=labelled, replace=False)
        x_small, y_small = x_train[subset], y_train[subset]
        initial = mlp((16,), seed + 1, name="student")

        scratch = clone(initial)
        scratch.compile(optimizer=keras.optimizers.Adam(3e-3), loss=hard_loss())
        scratch.fit(x_small, y_small, epochs=epochs, batch_size=32, verbose=0)

        ours_student = clone(initial)
        ours(teacher, ours_student).fit(
            x_small, y_small, epochs=epochs, batch_size=32, verbose=0
        )
        keras_student = clone(initial)
        keras_builtin(teacher, keras_student).fit(
            x_small, y_small, epochs=epochs, batch_size=32, verbose=0
        )
        # Keras' default string loss resolves to the clipped KL *function* on
        # raw logits (no softmax, no T^2): shown for reference.
        default_student = clone(initial)
        keras_builtin(teacher, default_student, kd_loss="kl_divergence").fit(
            x_small, y_small, epochs=epochs, batch_size=32, verbose=0
        )
        run = {
            "seed": seed,
            "teacher": accuracy(teacher, x_test, y_test),
            "scratch": accuracy(scratch, x_test, y_test),
            "distilled_ours": accuracy(ours_student, x_test, y_test),
            "distilled_keras": accuracy(keras_student, x_test, y_test),
            "distilled_keras_default_loss": accuracy(default_student, x_test, y_test),
        }
        print("  seed", seed, {k: round(v, 4) for k, v in run.items() if k != "seed"})
        runs.append(run)
    summary = {}
    for key in QUALITY_KEYS:
        values = np.array([r[key] for r in runs])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "min": float(values.min()), "max": float(values.max())}
    teacher_time = inference_seconds(teacher, x_test)
    student_time = inference_seconds(ours_student, x_test)
    return {
        "dataset": "scikit-learn load_digits (8x8 digits), 70/30 stratified split",
        "setup": (
            f"teacher MLP 256x256 trained 10 epochs on all {len(x_train)} "
            f"training images; students MLP 16 see only {labelled} labelled "
            f"images (random per seed), {epochs} epochs, batch 32, Adam 3e-3; "
            f"distillation alpha={ALPHA}, T={TEMPERATURE}; keras built-in uses "
            "LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence()) "
            "and student_loss_weight=alpha; distilled_keras_default_loss uses "
            "its default loss='kl_divergence' (for reference)"
        ),
        "seeds": list(seeds),
        "runs": runs,
        "summary": summary,
        "distilled_minus_scratch_mean": summary["distilled_ours"]["mean"] - summary["scratch"]["mean"],
        "teacher_params": int(teacher.count_params()),
        "student_params": int(ours_student.count_params()),
        "student_size_ratio": ours_student.count_params() / teacher.count_params(),
        "teacher_inference_s": teacher_time,
        "student_inference_s": student_time,
        "student_speedup": teacher_time / student_time,
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    quality = results["quality"]["summary"]
    names = list(QUALITY_KEYS)
    labels = ["teacher", "scratch", "distilled\n(ours)", "distilled\n(keras, KLD)", "distilled\n(keras default)"]
    means = [quality[n]["mean"] for n in names]
    stds = [quality[n]["std"] for n in names]
    left.bar(labels, means, yerr=stds, capsize=4, color=["grey", "tab:red", "tab:green", "tab:blue", "tab:orange"])
    for i, run_key in enumerate(names):
        left.scatter([i] * len(results["quality"]["runs"]), [r[run_key] for r in results["quality"]["runs"]], color="black", s=10, zorder=3)
    low = min(min(r[n] for r in results["quality"]["runs"]) for n in names)
    left.set_ylim(max(0.0, low - 0.05), 1.0)
    left.set_ylabel("test accuracy")
    left.set_title(f"digits, {len(results['quality']['seeds'])} seeds (mean ± std)")
    ratios = {
        "step: ours / keras": results["step_time"]["ratio_ours_over_keras"],
        "epoch: cache / plain fit": results["teacher_cache"]["ratio_cache_over_plain"],
        "epoch: live teacher / plain fit": results["teacher_cache"]["ratio_live_over_plain"],
    }
    right.barh(list(ratios), list(ratios.values()), color="tab:purple")
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xlabel("time ratio (lower is faster)")
    right.set_title("speed")
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    x_train, x_test, y_train, y_test = load_data()
    started = time.perf_counter()

    print("1/3 step time: ours vs keras.distillation.Distiller")
    step = step_time_benchmark(x_train, y_train, args.quick)
    print(
        f"  ours {step['ours_step_ms']:.3f} ms/step, keras {step['keras_step_ms']:.3f} "
        f"ms/step -> ratio ours/keras = {step['ratio_ours_over_keras']:.3f} (target <= 1.0)"
    )
    print("2/3 epoch time: TeacherCache distillation vs plain student.fit")
    cache = cache_benchmark(x_train, y_train, args.quick)
    print(
        f"  plain {cache['plain_epoch_s']:.3f} s, cache {cache['cache_epoch_s']:.3f} s, "
        f"live teacher {cache['live_teacher_epoch_s']:.3f} s -> ratio cache/plain = "
        f"{cache['ratio_cache_over_plain']:.3f} (target <= 1.15), live/plain = "
        f"{cache['ratio_live_over_plain']:.3f}"
    )
    seeds = range(3) if args.quick else range(5)
    epochs = 60
    print(f"3/3 quality over {len(seeds)} seeds")
    quality = quality_benchmark(x_train, y_train, x_test, y_test, seeds, epochs, labelled=150)
    for name, stats in quality["summary"].items():
        print(f"  {name:28s} {stats['mean']:.4f} ± {stats['std']:.4f}  [{stats['min']:.4f}, {stats['max']:.4f}]")
    print(
        f"  distilled (ours) - scratch = {quality['distilled_minus_scratch_mean']:+.4f}; "
        f"student {quality['student_params']:,} params = "
        f"{quality['student_size_ratio']:.3f} x teacher, inference "
        f"{quality['student_speedup']:.1f}x faster"
    )
    results = {
        "benchmark": "distiller_bench",
        "mode": "quick" if args.quick else "full",
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "python": platform.python_version()},
        "cpu_count": os.cpu_count(),
        "step_time": step,
        "teacher_cache": cache,
        "quality": quality,
        "wall_seconds": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    write_json(results, RESULTS / f"distiller_bench{suffix}.json")
    plot(results, RESULTS / f"distiller_bench{suffix}.png")
    print(f"wrote {RESULTS / f'distiller_bench{suffix}.json'} ({results['wall_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
