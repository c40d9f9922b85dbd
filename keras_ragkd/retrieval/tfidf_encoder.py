"""A light fallback encoder: TF-IDF followed by truncated SVD (LSA)."""

import hashlib
import json
import os
import re

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.feature_extraction.text import TfidfTransformer

from keras_ragkd.io_utils import atomic_write
from keras_ragkd.io_utils import read_json_record
from keras_ragkd.io_utils import write_folder
from keras_ragkd.io_utils import write_json
from keras_ragkd.retrieval.passage import check_texts
from keras_ragkd.validation import check_integer
from keras_ragkd.validation import is_integer

CONFIG_FILE = "tfidf_encoder.json"
ARRAYS_FILE = "tfidf_encoder.npz"
# The version of the `CONFIG_FILE` layout; `load` reads this one only.
FORMAT_VERSION = 1
# Words of any length, so that "3" or "a" count as terms.
TOKEN_PATTERN = r"(?u)\b\w+\b"


class TfidfEncoder:
    """TF-IDF + TruncatedSVD text encoder from scikit-learn (no neural model).

    `fit(texts)` learns the vocabulary, IDF weights and an SVD projection;
    `encode(texts)` returns L2-normalised float32 vectors. Useful when no
    pretrained model is available, and as a fast baseline. Saved as JSON +
    `.npz` arrays (never pickled).

    Args:
        dim: int, output dimension (capped by the vocabulary size - 1).
        ngram_range: tuple `(min_n, max_n)` of word n-grams.
        seed: int, seed of the randomized SVD.

    Example:

    >>> from keras_ragkd.retrieval import TfidfEncoder
    >>> texts = ["Paris is in France", "Rome is in Italy", "Bern is in Switzerland"]
    >>> encoder = TfidfEncoder(dim=2).fit(texts)
    >>> encoder.encode(["Paris France"]).shape
    (1, 2)
    """

    def __init__(self, dim=128, ngram_range=(1, 2), seed=0):
        self.requested_dim = check_integer("dim", dim)
        self.ngram_range = tuple(ngram_range)
        self.seed = seed
        self.vocabulary = None
        self.idf = None
        self.components = None

    def fit(self, texts):
        """Learns vocabulary, IDF and the SVD projection. Returns `self`."""
        texts = _check_words(texts)
        counts = CountVectorizer(
            ngram_range=self.ngram_range, token_pattern=TOKEN_PATTERN
        ).fit(texts)
        term_counts = counts.transform(texts)
        tfidf = TfidfTransformer().fit(term_counts)
        dim = min(self.requested_dim, term_counts.shape[1] - 1)
        if dim < 1:
            raise ValueError(
                "TfidfEncoder needs texts with at least 2 distinct terms. "
                f"Received: texts={texts[:3]!r}"
            )
        svd = TruncatedSVD(n_components=dim, random_state=self.seed)
        svd.fit(tfidf.transform(term_counts))
        self.vocabulary = {term: int(i) for term, i in counts.vocabulary_.items()}
        self.idf = tfidf.idf_.astype(np.float64)
        self.components = svd.components_.astype(np.float32)
        return self

    @property
    def dim(self):
        self._check_fitted()
        return int(self.components.shape[0])

    @property
    def identity(self):
        """`"tfidf-svd/<dim>/<hash of vocabulary and weights>"`."""
        self._check_fitted()
        return tfidf_identity(self.vocabulary, self.idf, self.components)

    def encode(self, texts, batch_size=None, verbose=0):
        """Encodes strings into a float32 `(n, dim)` NumPy array.

        `batch_size` and `verbose` are accepted for interface compatibility
        with the neural encoders; the whole list is transformed at once.
        """
        vectors = np.asarray(
            self.tfidf_vectors(texts) @ self.components.T, dtype=np.float32
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def tfidf_vectors(self, texts):
        """The L2-normalised TF-IDF vectors of `texts`, before the SVD.

        These are the lexical vectors (one column per vocabulary term, in
        `vocabulary` order) that `encode` projects; a text with no known term
        gets the zero vector. Hybrid retrieval scores passages with them.

        Returns:
            A scipy CSR matrix `(n, len(vocabulary))` of float64.

        Example:

        >>> texts = ["Paris is in France", "Rome is in Italy", "Bern is in Switzerland"]
        >>> encoder = TfidfEncoder(dim=2).fit(texts)
        >>> vectors = encoder.tfidf_vectors(["Paris France", "zzz"])
        >>> vectors.shape == (2, len(encoder.vocabulary)), vectors[1].nnz
        (True, 0)
        """
        self._check_fitted()
        texts = _check_words(texts)
        counts = CountVectorizer(
            ngram_range=self.ngram_range,
            token_pattern=TOKEN_PATTERN,
            vocabulary=self.vocabulary,
        ).transform(texts)
        tfidf = counts.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1))).ravel()
        return tfidf.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr()

    def save(self, directory):
        """Writes the encoder as JSON + `.npz` (no pickle) to the folder `directory`.

        The pair is written into a staging folder that then replaces
        `directory` as a whole (`keras_ragkd.io_utils.write_folder`), so a
        save killed at any point leaves the previous encoder loadable. The
        JSON records `format_version`.

        Args:
            directory: the encoder's own folder; an existing one is replaced.
        """
        self._check_fitted()
        write_folder(directory, self.write_files, kind="tfidf")

    def write_files(self, folder):
        """Writes the encoder's two files into the existing `folder`.

        Args:
            folder: a staging folder its caller swaps in when complete, as
                `save` and `PassageIndex.save` do.
        """
        self._check_fitted()
        config = {
            "format_version": FORMAT_VERSION,
            "dim": self.requested_dim,
            "ngram_range": list(self.ngram_range),
            "seed": self.seed,
            "vocabulary": self.vocabulary,
        }
        write_json(os.path.join(folder, CONFIG_FILE), config)
        atomic_write(
            os.path.join(folder, ARRAYS_FILE),
            lambda f: np.savez(f, idf=self.idf, components=self.components),
        )

    @classmethod
    def load(cls, directory):
        """Loads an encoder written by `save`, refusing inconsistent files and
        any other `format_version`."""
        directory = os.fspath(directory)
        config_path = os.path.join(directory, CONFIG_FILE)
        arrays_path = os.path.join(directory, ARRAYS_FILE)
        for path in (config_path, arrays_path):
            if not os.path.exists(path):
                raise ValueError(
                    "Expected a folder written by `TfidfEncoder.save`. "
                    f"Received: missing file={path!r}"
                )
        config = read_json_record(
            config_path, "TF-IDF encoder configuration", "`TfidfEncoder.save`", FORMAT_VERSION
        )
        try:
            encoder = cls(config["dim"], tuple(config["ngram_range"]), config["seed"])
            vocabulary = config["vocabulary"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"The TF-IDF encoder configuration cannot be read ({error!r}). "
                f"Received: file={config_path!r}"
            ) from None
        try:
            with np.load(arrays_path, allow_pickle=False) as arrays:
                idf = np.asarray(arrays["idf"])
                components = np.asarray(arrays["components"])
        except (ValueError, KeyError, OSError) as error:
            raise ValueError(
                f"The TF-IDF encoder arrays cannot be read ({error!r}). "
                f"Received: file={arrays_path!r}"
            ) from None
        _check_fitted_state(vocabulary, idf, components, directory)
        encoder.vocabulary = vocabulary
        encoder.idf = idf.astype(np.float64)
        encoder.components = components.astype(np.float32)
        return encoder

    def _check_fitted(self):
        if self.components is None:
            raise ValueError(
                "This TfidfEncoder is not fitted; call `fit(texts)` first. "
                "Received: components=None"
            )


def tfidf_identity(vocabulary, idf, components=None):
    """`"tfidf-svd/<dim>/<hash>"` of a vocabulary `{term: column}`, the float64
    IDF weights `(V,)` and the float32 SVD components `(dim, V)`; without
    components (unprojected TF-IDF vectors), `"tfidf/<V>/<hash>"`."""
    digest = hashlib.sha256(json.dumps(vocabulary, sort_keys=True).encode())
    digest.update(np.asarray(idf, dtype=np.float64).tobytes())
    if components is None:
        return f"tfidf/{len(vocabulary)}/{digest.hexdigest()[:16]}"
    digest.update(np.asarray(components, dtype=np.float32).tobytes())
    return f"tfidf-svd/{components.shape[0]}/{digest.hexdigest()[:16]}"


def _check_words(texts):
    """`check_texts(texts)`, refusing a list in which no text has a word."""
    texts = check_texts(texts)
    if not any(re.search(TOKEN_PATTERN, text) for text in texts):
        raise ValueError(
            "TfidfEncoder needs texts with words to learn a vocabulary from; these "
            f"are all empty or punctuation. Received: texts={texts[:3]!r}"
        )
    return texts


def _check_fitted_state(vocabulary, idf, components, directory):
    size = len(vocabulary) if isinstance(vocabulary, dict) else -1
    valid = (
        size > 1
        and all(isinstance(t, str) for t in vocabulary)
        and sorted(
            v if is_integer(v, minimum=0) else -1
            for v in vocabulary.values()
        ) == list(range(size))
        and idf.shape == (size,)
        and components.ndim == 2
        and components.shape[1] == size
        and 0 < components.shape[0] < size
        and idf.dtype.kind == "f"
        and components.dtype.kind == "f"
        and np.isfinite(idf).all()
        and np.isfinite(components).all()
    )
    if not valid:
        raise ValueError(
            "The TF-IDF encoder files disagree: expected a vocabulary mapping "
            "V terms to the columns 0..V-1, idf of shape (V,) and components "
            "of shape (dim, V), all finite. Received: "
            f"directory={directory!r}, vocabulary size={size}, "
            f"idf.shape={idf.shape}, components.shape={components.shape}"
        )
