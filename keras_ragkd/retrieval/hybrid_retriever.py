"""`HybridRetriever`: dense (MiniLM) and lexical (TF-IDF) retrieval, fused."""

import keras
import numpy as np
import scipy.sparse
import tensorflow as tf

from keras_ragkd.retrieval.fusion import check_fusion
from keras_ragkd.retrieval.fusion import fuse_candidates
from keras_ragkd.retrieval.passage import passage_text
from keras_ragkd.retrieval.passage_index import check_k
from keras_ragkd.retrieval.retriever import PassageRetriever
from keras_ragkd.retrieval.tfidf_query_encoder import lexical_query_encoder
from keras_ragkd.retrieval.top_k import blockwise_top_k
from keras_ragkd.validation import check_number

LEXICAL_WEIGHTS = ("lexical_rows", "lexical_columns", "lexical_values")


@keras.saving.register_keras_serializable(package="keras_ragkd")
class HybridRetriever(PassageRetriever):
    """A `PassageRetriever` that fuses dense and lexical (TF-IDF) scores.

    Dense embeddings confuse passages that share a meaning: for "What is the
    capital of Canada?" MiniLM ranks "The capital of Bermuda is Ottawa."
    above "The capital of Canada is Lima." once the facts are swapped. The
    TF-IDF score of the word "Canada" does not. This layer takes both query
    vectors, `{"dense": (batch, d), "lexical": (batch, V)}` (from a
    `HybridQueryEncoder`), and per query:

    1. takes the `candidates` best passages by dense score (FAISS or the
       in-graph matmul, as `PassageRetriever`) and the `candidates` best by
       lexical score `<l, t_z>` (the passages' L2-normalised TF-IDF vectors
       `t_z`, a sparse non-trainable weight; only passages sharing a term);
    2. ranks their union with `fuse_candidates` (`"weighted"`: dense score +
       `lexical_weight` x lexical score; `"rrf"`: reciprocal-rank fusion),
       equal scores by the lower row, and keeps the best `k`.

    Both backends compute the lexical scores and the fusion with the same
    graph ops and differ only in the dense search, so on a `"Flat"` index
    they return the same passages. The outputs keep `PassageRetriever`'s
    contract; `"doc_scores"` is `<q, d_z> + lexical_weight * <l, t_z>`, so
    gradients reach the dense query encoder as before (and
    `lexical_weight`, when `train_lexical_weight`), and `P(z|x)` in a RAG
    model sees the lexical evidence too. With `lexical_weight=0` the
    `"doc_scores"` are the plain inner products.

    Args:
        index: the dense `PassageIndex`, or the directory of a saved one.
        lexical_encoder: a fitted `TfidfEncoder`, or a `TfidfQueryEncoder`
            (projected or not), fitted on the passages; its unprojected
            TF-IDF vectors of `"title. text"` of every index passage become
            the lexical weight. The query encoder must use the same
            vocabulary (see `HybridQueryEncoder.from_encoders`).
        k: positive int, passages per query.
        backend: `"faiss"` or `"tensor"` (the dense search).
        fusion: `"weighted"` or `"rrf"`.
        lexical_weight: float, the lexical score's weight in the weighted
            fusion and in `"doc_scores"`.
        train_lexical_weight: bool, learn `lexical_weight` (a scalar
            weight) through `"doc_scores"`.
        candidates: int >= `k`, candidates taken from each list.
        rrf_constant: positive float, the constant of reciprocal-rank fusion.
        use_approx_max_k: as `PassageRetriever` (dense search only).
        lexical_shape: `(num_passages, V)`; used by `from_config`.
        lexical_nnz: int, nonzeros of the lexical matrix; used by
            `from_config`.
        lexical_identity: the lexical vocabulary's identity (recorded).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from keras_ragkd.retrieval import (HybridRetriever, PassageIndex,
    ...     TfidfEncoder, TfidfQueryEncoder)
    >>> passages = [{"id": c, "text": f"The capital of {c} is {t}."} for c, t in
    ...     [("Canada", "Ottawa"), ("Bermuda", "Hamilton"), ("Peru", "Lima")]]
    >>> index = PassageIndex.from_embeddings(passages, np.eye(3))
    >>> tfidf = TfidfEncoder(dim=2).fit([p["text"] for p in passages])
    >>> retriever = HybridRetriever(index, tfidf, k=2, lexical_weight=1.0)
    >>> lexical = TfidfQueryEncoder.from_encoder(tfidf, project=False)
    >>> query = {"dense": np.array([[0.1, 0.3, 0.0]], "float32"),  # "Bermuda"
    ...          "lexical": lexical(tf.constant(["capital of Canada"]))}
    >>> retriever(query)["rows"].numpy().tolist()
    [[0, 1]]
    """

    def __init__(
        self,
        index,
        lexical_encoder=None,
        k=5,
        backend="faiss",
        fusion="weighted",
        lexical_weight=0.25,
        train_lexical_weight=False,
        candidates=50,
        rrf_constant=60.0,
        use_approx_max_k=False,
        lexical_shape=None,
        lexical_nnz=None,
        lexical_identity=None,
        **kwargs,
    ):
        super().__init__(
            index,
            k=k,
            backend=backend,
            use_approx_max_k=use_approx_max_k,
            **kwargs,
        )
        check_fusion(fusion)
        check_k(candidates)
        if candidates < self.k:
            raise ValueError(
                "`candidates` (taken from each list) must be at least `k`. "
                f"Received: candidates={candidates}, k={self.k}"
            )
        rrf_constant = check_number("rrf_constant", rrf_constant, low=0, low_inclusive=False)
        self.fusion = fusion
        self.candidates = int(candidates)
        self.rrf_constant = rrf_constant
        self.train_lexical_weight = bool(train_lexical_weight)
        self.lexical_weight = self._add_weight_after_build(
            shape=(), dtype="float32", trainable=self.train_lexical_weight,
            name="lexical_weight",
        )
        self.lexical_weight.assign(float(lexical_weight))
        if lexical_encoder is not None:
            matrix, lexical_identity = passage_tfidf_matrix(lexical_encoder, index)
            lexical_shape, lexical_nnz = matrix.shape, matrix.nnz
        elif lexical_shape is None or lexical_nnz is None:
            raise ValueError(
                "Expected `lexical_encoder` (a fitted `TfidfEncoder` or "
                "`TfidfQueryEncoder`). Received: lexical_encoder=None"
            )
        if int(lexical_shape[0]) != len(self.index):
            raise ValueError(
                "Expected one lexical row per passage of the index "
                f"({len(self.index)}). Received: lexical_shape={tuple(lexical_shape)}"
            )
        self.lexical_shape = (int(lexical_shape[0]), int(lexical_shape[1]))
        self.lexical_identity = lexical_identity
        for name, dtype in zip(LEXICAL_WEIGHTS, ("int32", "int32", "float32")):
            weight = self._add_weight_after_build(
                shape=(int(lexical_nnz),), dtype=dtype, trainable=False, name=name
            )
            setattr(self, name, weight)
        if lexical_encoder is not None:
            self.lexical_rows.assign(matrix.row.astype(np.int32))
            self.lexical_columns.assign(matrix.col.astype(np.int32))
            self.lexical_values.assign(matrix.data.astype(np.float32))

    # Forward pass.

    def call(self, queries):
        dense, lexical = self._split_queries(queries)
        lexical = tf.stop_gradient(tf.cast(lexical, tf.float32))
        lexical_all = self.lexical_scores(lexical)
        found = min(self.candidates, len(self.index))
        lexical_top, lexical_rows = blockwise_top_k(lexical_all, found)
        lexical_rows = tf.cast(lexical_rows, tf.int32)
        if self.backend == "faiss":
            dense_rows, dense_mask, embeddings = self._faiss_candidates(
                dense, lexical_rows, found
            )
        else:
            dense_rows, dense_mask, _ = self._tensor_search(dense, found)
            both = tf.concat([dense_rows, lexical_rows], axis=1)
            embeddings = tf.gather(tf.convert_to_tensor(self.passage_embeddings), both)
        embeddings = tf.stop_gradient(embeddings)
        rows = tf.concat([dense_rows, lexical_rows], axis=1)
        valid = tf.concat([dense_mask, lexical_top > 0], axis=1)
        dense_scores = tf.einsum("bd,bcd->bc", dense, embeddings)
        lexical_scores = tf.gather(lexical_all, rows, batch_dims=1)
        positions, mask = fuse_candidates(
            rows, valid, tf.stop_gradient(dense_scores), lexical_scores, found, self.k,
            fusion=self.fusion, lexical_weight=tf.stop_gradient(self.lexical_weight),
            rrf_constant=self.rrf_constant,
        )
        doc_scores = tf.gather(dense_scores, positions, batch_dims=1) + (
            self.lexical_weight * tf.gather(lexical_scores, positions, batch_dims=1)
        )
        rows = tf.where(mask, tf.gather(rows, positions, batch_dims=1), 0)
        return {
            "rows": rows,
            "mask": mask,
            "doc_scores": doc_scores * tf.cast(mask, doc_scores.dtype),
            "passage_embeddings": tf.gather(embeddings, positions, batch_dims=1),
        }

    def lexical_scores(self, lexical_queries):
        """`<l, t_z>` for every passage: float32 `(batch, num_passages)`.

        A gather and a segment sum over the nonzeros of the passages'
        TF-IDF matrix (works under XLA and in SavedModels; memory
        `batch x nonzeros`).
        """
        values = tf.gather(lexical_queries, self.lexical_columns, axis=1)
        values = values * self.lexical_values[None, :]
        scores = tf.math.unsorted_segment_sum(
            tf.transpose(values), self.lexical_rows, self.lexical_shape[0]
        )
        return tf.transpose(scores)

    def _faiss_candidates(self, dense, lexical_rows, found):
        """FAISS's top `found` by dense score, with the embeddings of those
        rows and of the lexical candidates, from one index version."""
        index = self.index

        def search(vectors, other_rows):
            rows, _, mask, embeddings = index.search_arrays(vectors.numpy(), found)
            other = np.asarray(index.embeddings[other_rows.numpy()])
            return rows.astype(np.int32), mask, np.concatenate([embeddings, other], 1)

        rows, mask, embeddings = tf.py_function(
            search, [tf.stop_gradient(dense), lexical_rows], [tf.int32, tf.bool, tf.float32]
        )
        batch = dense.shape[0]
        rows.set_shape([batch, found])
        mask.set_shape([batch, found])
        embeddings.set_shape([batch, 2 * found, index.dim])
        return tf.stop_gradient(rows), tf.stop_gradient(mask), embeddings

    def _split_queries(self, queries):
        if not isinstance(queries, dict) or set(queries) != {"dense", "lexical"}:
            raise ValueError(
                "Expected a dict {'dense': (batch, d), 'lexical': (batch, V)} "
                "(the output of a `HybridQueryEncoder`). Received: "
                f"queries={type(queries).__name__}"
                f"{sorted(queries) if isinstance(queries, dict) else ''}"
            )
        dense = tf.cast(queries["dense"], tf.float32)
        self._check_query_shape(dense.shape)
        self._check_lexical_shape(queries["lexical"].shape)
        return dense, queries["lexical"]

    def _check_lexical_shape(self, shape):
        size = self.lexical_shape[1]
        if len(shape) != 2 or (shape[-1] is not None and shape[-1] != size):
            raise ValueError(
                f"Expected lexical query vectors of shape (batch, {size}) (the "
                "TF-IDF vocabulary the retriever was built with). Received: "
                f"lexical.shape={tuple(shape)}"
            )

    def compute_output_spec(self, queries):
        if not isinstance(queries, dict) or set(queries) != {"dense", "lexical"}:
            self._split_queries(queries)  # raises
        self._check_lexical_shape(queries["lexical"].shape)
        return super().compute_output_spec(queries["dense"])

    # Serialisation.

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for name in ("lexical_weight",) + LEXICAL_WEIGHTS:
            store[name] = keras.ops.convert_to_numpy(getattr(self, name))

    def load_own_variables(self, store):
        names = ("lexical_weight",) + LEXICAL_WEIGHTS
        missing = [name for name in names if name not in store.keys()]
        if missing:
            raise ValueError(
                f"HybridRetriever '{self.name}' expected the saved variables "
                f"{list(names)}. Received: missing={missing}"
            )
        for name in names:
            getattr(self, name).assign(store[name])
        super().load_own_variables({key: store[key] for key in store.keys() if key not in names})

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "fusion": self.fusion,
                "lexical_weight": float(keras.ops.convert_to_numpy(self.lexical_weight)),
                "train_lexical_weight": self.train_lexical_weight,
                "candidates": self.candidates,
                "rrf_constant": self.rrf_constant,
                "lexical_shape": list(self.lexical_shape),
                "lexical_nnz": int(self.lexical_values.shape[0]),
                "lexical_identity": self.lexical_identity,
            }
        )
        return config


def passage_tfidf_matrix(lexical_encoder, index):
    """`(matrix, identity)`: the unprojected TF-IDF vectors of every passage
    of `index` (`"title. text"`) as a scipy COO matrix, and the identity of
    the vocabulary and weights (`"tfidf/<V>/<hash>"`)."""
    lexical_encoder = lexical_query_encoder(lexical_encoder)
    texts = [passage_text(p) for p in index.passages]
    blocks = [
        scipy.sparse.coo_matrix(lexical_encoder(tf.constant(texts[start : start + 256])).numpy())
        for start in range(0, len(texts), 256)
    ]
    return scipy.sparse.vstack(blocks).tocsr().tocoo(), lexical_encoder.identity
