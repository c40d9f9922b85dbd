"""`TfidfQueryEncoder`: a fitted `TfidfEncoder` as a Keras layer on raw strings."""

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.retrieval.encoders import encode_in_batches
from keras_ragkd.retrieval.tfidf_encoder import TfidfEncoder
from keras_ragkd.retrieval.tfidf_encoder import tfidf_identity
from keras_ragkd.validation import is_integer

# What `\b\w+\b` (scikit-learn's token pattern here) does not match, in RE2
# syntax: Python's `\w` is Unicode letters, digits and the underscore.
_NON_WORD = r"[^\p{L}\p{N}_]+"


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TfidfQueryEncoder(keras.layers.Layer):
    """The vectors of a fitted `TfidfEncoder`, computed in the graph.

    Lower-casing, word tokenisation, n-grams, term counts, IDF weighting, L2
    normalisation and the SVD projection all run as TensorFlow ops, so the
    layer can be the query encoder of a RAG model over a TF-IDF index: inside
    `tf.data`, `model.fit` and an exported SavedModel (no scikit-learn, no
    Python callback). Its vectors match `TfidfEncoder.encode` (to float32
    round-off) and its `identity` is the encoder's, so an index built with
    the `TfidfEncoder` accepts it. It has no trainable weights.

    Build one with `TfidfQueryEncoder.from_encoder(tfidf_encoder)`. With
    `project=False` (`dim=None`) the layer stops before the SVD and returns
    the L2-normalised TF-IDF vectors themselves, one column per vocabulary
    term (what `TfidfEncoder.tfidf_vectors` returns): the lexical query
    vectors of a `HybridRetriever`.

    Args:
        vocabulary: list of terms (words and word n-grams), in column order.
        dim: int, output dimension (the SVD's number of components), or None
            for the unprojected TF-IDF vectors (`len(vocabulary)` columns).
        ngram_range: tuple `(min_n, max_n)` of word n-grams.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> from keras_ragkd.retrieval import TfidfEncoder, TfidfQueryEncoder
    >>> texts = ["Paris is in France", "Rome is in Italy", "Bern is in Switzerland"]
    >>> encoder = TfidfEncoder(dim=2).fit(texts)
    >>> layer = TfidfQueryEncoder.from_encoder(encoder)
    >>> layer(tf.constant(["Paris France"])).shape
    TensorShape([1, 2])
    >>> layer.identity == encoder.identity
    True
    >>> lexical = TfidfQueryEncoder.from_encoder(encoder, project=False)
    >>> lexical(tf.constant(["Paris France"])).shape == (1, len(encoder.vocabulary))
    True
    """

    def __init__(self, vocabulary, dim, ngram_range=(1, 2), **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        vocabulary = list(vocabulary)
        if not vocabulary or not all(isinstance(t, str) and t for t in vocabulary) or len(
            set(vocabulary)
        ) != len(vocabulary):
            raise ValueError(
                "`vocabulary` must be a non-empty list of distinct, non-empty "
                f"strings. Received: vocabulary={vocabulary[:5]!r} (len {len(vocabulary)})"
            )
        if dim is not None and not is_integer(dim):
            raise ValueError(
                f"`dim` must be a positive integer or None. Received: dim={dim!r}"
            )
        ngram_range = tuple(ngram_range)
        if len(ngram_range) != 2 or not 1 <= ngram_range[0] <= ngram_range[1]:
            raise ValueError(
                "`ngram_range` must be `(min_n, max_n)` with 1 <= min_n <= max_n. "
                f"Received: ngram_range={ngram_range!r}"
            )
        self.vocabulary = vocabulary
        self.dim = dim
        self.ngram_range = tuple(int(n) for n in ngram_range)
        self.terms = keras.layers.StringLookup(
            vocabulary=vocabulary, num_oov_indices=1, output_mode="count", name="terms"
        )
        self.idf = self.add_weight(
            shape=(len(vocabulary),), dtype="float64", initializer="zeros",
            trainable=False, name="idf",
        )
        self.components = None
        if dim is not None:
            self.components = self.add_weight(
                shape=(len(vocabulary), dim), dtype="float32", initializer="zeros",
                trainable=False, name="components",
            )
        # String ops cannot be XLA-compiled (see `MiniLMEncoder`).
        self.supports_jit = False
        self.terms.supports_jit = False
        self.built = True

    @classmethod
    def from_encoder(cls, encoder, project=True, **kwargs):
        """The layer of a fitted `TfidfEncoder`, with its weights.

        Args:
            encoder: a fitted `TfidfEncoder`.
            project: bool. False: no SVD, the layer returns the encoder's
                `tfidf_vectors` (lexical vectors) instead of its `encode`.
            **kwargs: `keras.layers.Layer` arguments.
        """
        encoder._check_fitted()
        vocabulary = [None] * len(encoder.vocabulary)
        for term, column in encoder.vocabulary.items():
            vocabulary[column] = term
        dim = encoder.dim if project else None
        layer = cls(vocabulary, dim, encoder.ngram_range, **kwargs)
        layer.idf.assign(np.asarray(encoder.idf, dtype="float64"))
        if project:
            layer.components.assign(np.asarray(encoder.components, dtype="float32").T)
        return layer

    @property
    def output_dim(self):
        """`dim`, or `len(vocabulary)` for the unprojected TF-IDF vectors."""
        return len(self.vocabulary) if self.dim is None else self.dim

    def call(self, texts):
        texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])
        words = tf.strings.split(
            tf.strings.regex_replace(tf.strings.lower(texts, encoding="utf-8"), _NON_WORD, " ")
        )
        min_n, max_n = self.ngram_range
        grams = [tf.strings.ngrams(words, n, separator=" ") for n in range(min_n, max_n + 1)]
        terms = grams[0] if len(grams) == 1 else tf.concat(grams, axis=1)
        # Column 0 counts out-of-vocabulary terms, which TF-IDF ignores.
        counts = tf.cast(self.terms(terms), "float32")[:, 1:]
        tfidf = tf.math.l2_normalize(counts * tf.cast(self.idf, "float32"), axis=-1)
        if self.components is None:
            return tfidf
        return tf.math.l2_normalize(tf.matmul(tfidf, self.components), axis=-1)

    def compute_output_spec(self, texts):
        return keras.KerasTensor((texts.shape[0], self.output_dim), "float32")

    @property
    def identity(self):
        """The fitted `TfidfEncoder`'s identity (stored in index manifests);
        `"tfidf/<V>/<hash>"` for the unprojected vectors."""
        vocabulary = {term: column for column, term in enumerate(self.vocabulary)}
        components = None
        if self.components is not None:
            components = np.ascontiguousarray(self.components.numpy().T, dtype="float32")
        return tfidf_identity(
            vocabulary, np.asarray(self.idf.numpy(), dtype="float64"), components
        )

    def encode(self, texts, batch_size=256, verbose="auto"):
        """Encodes strings into a float32 `(n, dim)` NumPy array."""
        return encode_in_batches(self, texts, batch_size, verbose)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary": self.vocabulary,
                "dim": self.dim,
                "ngram_range": list(self.ngram_range),
            }
        )
        return config


def lexical_query_encoder(encoder):
    """The unprojected `TfidfQueryEncoder` (TF-IDF vectors, no SVD) of a
    fitted `TfidfEncoder` or of a `TfidfQueryEncoder`; an unprojected layer is
    returned as it is.

    Example:

    >>> from keras_ragkd.retrieval import TfidfEncoder
    >>> encoder = TfidfEncoder(dim=2).fit(["Paris is in France", "Rome is in Italy"])
    >>> lexical_query_encoder(encoder).output_dim == len(encoder.vocabulary)
    True
    """
    if isinstance(encoder, TfidfEncoder):
        return TfidfQueryEncoder.from_encoder(encoder, project=False)
    if not isinstance(encoder, TfidfQueryEncoder):
        raise TypeError(
            "Expected a fitted `TfidfEncoder` or a `TfidfQueryEncoder`. "
            f"Received: encoder={encoder!r}"
        )
    if encoder.components is None:
        return encoder
    layer = TfidfQueryEncoder(encoder.vocabulary, None, encoder.ngram_range)
    layer.idf.assign(encoder.idf)
    return layer
