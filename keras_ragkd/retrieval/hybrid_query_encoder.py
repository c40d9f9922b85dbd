"""`HybridQueryEncoder`: a dense and a lexical query vector from one string."""

import keras

from keras_ragkd.retrieval.tfidf_query_encoder import lexical_query_encoder


@keras.saving.register_keras_serializable(package="keras_ragkd")
class HybridQueryEncoder(keras.layers.Layer):
    """Maps query strings to `{"dense": (batch, d), "lexical": (batch, V)}`.

    The query encoder of a `HybridRetriever` (e.g. the `query_encoder` of a
    `RetrievalAugmentedGenerator`): `"dense"` comes from `dense_encoder`
    (e.g. a `MiniLMEncoder`, trainable), `"lexical"` from an unprojected
    `TfidfQueryEncoder` (no trainable weights; string ops, so not under XLA).

    Args:
        dense_encoder: Keras layer or model, strings → `(batch, d)`.
        lexical_encoder: `TfidfQueryEncoder` with `dim=None`, or a fitted
            `TfidfEncoder` / projected `TfidfQueryEncoder` (converted).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import keras, tensorflow as tf
    >>> from keras_ragkd.retrieval import HybridQueryEncoder, TfidfEncoder
    >>> tfidf = TfidfEncoder(dim=2).fit(["Paris is in France", "Rome is in Italy"])
    >>> dense = keras.layers.TextVectorization(max_tokens=8, output_mode="tf_idf")
    >>> dense.adapt(["Paris is in France", "Rome is in Italy"])
    >>> vectors = HybridQueryEncoder(dense, tfidf)(tf.constant(["Rome?"]))
    >>> vectors["dense"].shape, vectors["lexical"].shape
    (TensorShape([1, 7]), TensorShape([1, 11]))
    """

    def __init__(self, dense_encoder, lexical_encoder, **kwargs):
        super().__init__(**kwargs)
        self.dense_encoder = dense_encoder
        self.lexical_encoder = lexical_query_encoder(lexical_encoder)
        self.supports_jit = False

    @property
    def identity(self):
        """The dense encoder's identity (what a `PassageIndex` records), or None."""
        return getattr(self.dense_encoder, "identity", None)

    @property
    def dim(self):
        """The dense encoder's output dimension, or None."""
        return getattr(self.dense_encoder, "dim", None)

    def build(self, input_shape=None):
        self.built = True

    def call(self, texts, training=None):
        return {
            "dense": self.dense_encoder(texts, training=training),
            "lexical": self.lexical_encoder(texts),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dense_encoder": keras.saving.serialize_keras_object(self.dense_encoder),
                "lexical_encoder": keras.saving.serialize_keras_object(self.lexical_encoder),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("dense_encoder", "lexical_encoder"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
