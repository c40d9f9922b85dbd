"""Text encoders: anything that maps strings to L2-normalised vectors.

An encoder used by `PassageIndex` has an `encode(texts, batch_size)` method
returning a float32 NumPy array `(n, d)`, a `dim` and an `identity` string
(stored in the index manifest, so that an index is never queried with vectors
from another model). `MiniLMEncoder` and `TfidfEncoder` are encoders;
`KerasTextEncoder` turns any Keras model that maps strings to vectors into one.
"""

import hashlib

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.retrieval.passage import check_texts
from keras_ragkd.validation import check_integer


def encode_in_batches(encode_batch, texts, batch_size=64, verbose="auto"):
    """Runs `encode_batch` over `texts` in batches with a Keras progress bar.

    Args:
        encode_batch: callable mapping a 1-D `tf.string` tensor to a
            `(batch, d)` float tensor.
        texts: list of strings.
        batch_size: positive int.
        verbose: `"auto"`, 0 or 1. `"auto"` shows a progress bar only for more
            than one batch.

    Returns:
        float32 NumPy array `(len(texts), d)`.

    Example:

    >>> import tensorflow as tf
    >>> from keras_ragkd.retrieval.encoders import encode_in_batches
    >>> encode_in_batches(
    ...     lambda t: tf.ones((tf.shape(t)[0], 2)), ["a", "b", "c"], 2, 0
    ... ).shape
    (3, 2)
    """
    texts = check_texts(texts)
    batch_size = check_integer("batch_size", batch_size)
    num_batches = -(-len(texts) // batch_size)
    if verbose == "auto":
        verbose = 1 if num_batches > 1 else 0
    progbar = keras.utils.Progbar(len(texts), verbose=verbose, unit_name="text")
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tf.constant(texts[start : start + batch_size], dtype=tf.string)
        outputs.append(np.asarray(encode_batch(batch), dtype=np.float32))
        progbar.add(len(outputs[-1]))
    return np.concatenate(outputs, axis=0)


def weights_fingerprint(model):
    """Returns a short hash of a Keras model's weights (for `identity`)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)))
    return digest.hexdigest()[:16]


class KerasTextEncoder:
    """Wraps a Keras model mapping strings or token ids to vectors `(batch, d)`.

    Use it to index passages with your own (possibly trained) tower. The
    model receives a 1-D `tf.string` tensor, or, when `tokenizer` is given,
    `tokenizer(strings)` (e.g. padded token ids from
    `keras_ragkd.models.load_minilm_tokenizer(sequence_length=...)`).

    Args:
        model: a `keras.Model` (or layer) mapping its inputs to float vectors.
        tokenizer: optional callable (e.g. a keras-hub tokenizer layer)
            applied to the strings before `model`.
        identity: string stored in index manifests. Defaults to the model's
            class name, name, and a hash of its current weights.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ragkd.retrieval import KerasTextEncoder
    >>> vectorizer = keras.layers.TextVectorization(output_mode="tf_idf")
    >>> vectorizer.adapt(["red apple", "green pear"])
    >>> encoder = KerasTextEncoder(keras.Sequential([vectorizer]))
    >>> encoder.encode(["red pear"]).shape
    (1, 5)
    """

    def __init__(self, model, tokenizer=None, identity=None):
        for name, value in (("model", model), ("tokenizer", tokenizer)):
            if not callable(value) and (name == "model" or value is not None):
                raise TypeError(
                    f"`{name}` must be a Keras layer or model. "
                    f"Received: {name}={value!r}"
                )
        self.model = model
        self.tokenizer = tokenizer
        self._identity = identity
        self._encode_batch = tf.function(
            self._encode_texts,
            input_signature=[tf.TensorSpec([None], tf.string)],
            reduce_retracing=True,
        )

    def _encode_texts(self, texts):
        inputs = texts if self.tokenizer is None else self.tokenizer(texts)
        return tf.cast(self.model(inputs, training=False), tf.float32)

    @property
    def identity(self):
        if self._identity is not None:
            return self._identity
        return (
            f"{type(self.model).__name__}:{self.model.name}:"
            f"{weights_fingerprint(self.model)}"
        )

    @property
    def dim(self):
        return int(self._encode_batch(tf.constant(["dim"])).shape[-1])

    def encode(self, texts, batch_size=64, verbose="auto"):
        """Encodes strings into a float32 `(n, d)` NumPy array."""
        return encode_in_batches(self._encode_batch, texts, batch_size, verbose)


def as_text_encoder(encoder):
    """Returns `encoder` if it has `encode`/`identity`, else wraps a model."""
    if hasattr(encoder, "encode") and hasattr(encoder, "identity"):
        return encoder
    if isinstance(encoder, keras.Layer):
        return KerasTextEncoder(encoder)
    raise TypeError(
        "Expected an encoder with `encode(texts, batch_size)` and `identity` "
        "(e.g. `MiniLMEncoder`, `TfidfEncoder`) or a Keras model mapping "
        f"strings to vectors. Received: encoder={encoder!r}"
    )
