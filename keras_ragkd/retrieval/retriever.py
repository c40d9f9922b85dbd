"""`PassageRetriever`: the Keras layer that retrieves passages for queries."""

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.retrieval.passage_index import PassageIndex
from keras_ragkd.retrieval.passage_index import check_k
from keras_ragkd.retrieval.top_k import blockwise_top_k

BACKENDS = ("faiss", "tensor")


@keras.saving.register_keras_serializable(package="keras_ragkd")
class PassageRetriever(keras.layers.Layer):
    """Retrieves the top-`k` passages of a `PassageIndex` for query vectors.

    Given query embeddings `q` of shape `(batch, d)` the layer returns a dict:

    - `"rows"`: int32 `(batch, k)` passage rows (0 where `mask` is False);
    - `"mask"`: bool `(batch, k)`, False for missing results (`k > N`, or an
      approximate index that found fewer than `k`);
    - `"doc_scores"`: float32 `(batch, k)`, `<q, d_z>` recomputed in the graph
      from the retrieved (stop-gradient) passage embeddings, so gradients
      reach the query encoder; 0.0 where `mask` is False;
    - `"passage_embeddings"`: float32 `(batch, k, d)` (no gradient).

    The layer knows passages by row only: what a generator reads of them
    (e.g. its token ids, `keras_ragkd.rag.PassageTokenTable`) belongs to the
    generator's side.

    Backends:

    - `"faiss"`: searches the FAISS index inside `tf.py_function` (any index
      type, e.g. HNSW/IVF-PQ; CPU/GPU hosts; `model.fit` and `tf.data`).
      Not XLA-compilable (`supports_jit` is False) and not exportable.
    - `"tensor"`: passage embeddings live in a non-trainable weight; exact
      `matmul` + `blockwise_top_k` (the same results as `tf.math.top_k`,
      faster on large indexes), or `tf.math.approx_max_k` for TPUs. Runs
      under `jit_compile=True`, on TPUs and in exported SavedModels.

    For a `"Flat"` index both backends return the same passages (dense and
    TF-IDF scores fused: `HybridRetriever`, a subclass). Switch with
    `set_backend` (or `keras_ragkd.retrieval.use_backend(model, "tensor")`).
    The config references the index by its saved directory; the index itself
    is never serialised into the model.

    Args:
        index: a `PassageIndex`, or the directory of a saved one.
        k: positive int, passages per query.
        backend: `"faiss"` or `"tensor"`.
        use_approx_max_k: bool, use `tf.math.approx_max_k` in the tensor
            backend (fast on TPU, approximate).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from keras_ragkd.retrieval import PassageIndex, PassageRetriever
    >>> vectors = np.eye(4, dtype="float32")
    >>> index = PassageIndex.from_embeddings(
    ...     [{"id": str(i), "text": f"passage {i}"} for i in range(4)], vectors
    ... )
    >>> retriever = PassageRetriever(index, k=2)
    >>> outputs = retriever(vectors[:1] + 0.5 * vectors[2:3])
    >>> outputs["rows"].numpy().tolist()
    [[0, 2]]
    """

    def __init__(
        self,
        index,
        k=5,
        backend="faiss",
        use_approx_max_k=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(index, (str, bytes)) or hasattr(index, "__fspath__"):
            index = PassageIndex.load(index)
        if not isinstance(index, PassageIndex):
            raise TypeError(
                "Expected a `PassageIndex` or the directory of a saved one. "
                f"Received: index={index!r}"
            )
        check_k(k)
        check_backend(backend)
        self.index = index
        self.k = int(k)
        self.backend = backend
        self.use_approx_max_k = bool(use_approx_max_k)
        self.passage_embeddings = None
        if backend == "tensor":
            self._create_passage_embeddings()
        self._build_at_init()

    # Backends.

    @property
    def supports_jit(self):
        return self.backend == "tensor"

    @supports_jit.setter
    def supports_jit(self, value):
        # `keras.layers.Layer.__init__` assigns a default; the backend decides.
        pass

    def set_backend(self, backend):
        """Switches between `"faiss"` and `"tensor"` in place.

        Switching to `"tensor"` copies the index's current embeddings into the
        layer's non-trainable weight (created on first use). Retrace compiled
        functions afterwards (`use_backend` does it for a whole model).
        """
        check_backend(backend)
        if backend == "tensor":
            if self.passage_embeddings is None:
                self._create_passage_embeddings()
            else:
                self.refresh()
        self.backend = backend

    def refresh(self):
        """Copies the index's current embeddings into the tensor backend."""
        if self.passage_embeddings is None:
            return
        if tuple(self.passage_embeddings.shape) != self.index.embeddings.shape:
            raise ValueError(
                "The index changed size since this retriever was created; "
                "create a new `PassageRetriever` for it. Received: "
                f"index.embeddings.shape={self.index.embeddings.shape}, "
                f"weight shape={tuple(self.passage_embeddings.shape)}"
            )
        self.passage_embeddings.assign(np.asarray(self.index.embeddings))

    def _create_passage_embeddings(self):
        self.passage_embeddings = self._add_weight_after_build(
            shape=self.index.embeddings.shape,
            dtype="float32",
            trainable=False,
            name="passage_embeddings",
        )
        self.passage_embeddings.assign(np.asarray(self.index.embeddings))

    def _add_weight_after_build(self, **kwargs):
        """`add_weight` (zeros) on a built layer, whose tracker is locked."""
        locked = self._tracker.locked
        self._tracker.unlock()
        try:
            return self.add_weight(initializer="zeros", **kwargs)
        finally:
            if locked:
                self._tracker.lock()

    # Forward pass.

    def call(self, query_embeddings):
        query_embeddings = tf.cast(query_embeddings, tf.float32)
        self._check_query_shape(query_embeddings.shape)
        if self.backend == "faiss":
            rows, mask, passage_embeddings = self._faiss_search(query_embeddings)
        else:
            rows, mask, passage_embeddings = self._tensor_search(query_embeddings)
        passage_embeddings = tf.stop_gradient(passage_embeddings)
        # Recomputed from the k gathered rows even on the tensor backend: the
        # gradient of `top_k`'s values would be a dense (batch, N) matmul.
        doc_scores = tf.einsum("bd,bkd->bk", query_embeddings, passage_embeddings)
        return {
            "rows": rows,
            "mask": mask,
            "doc_scores": doc_scores * tf.cast(mask, doc_scores.dtype),
            "passage_embeddings": passage_embeddings,
        }

    def _faiss_search(self, query_embeddings):
        index, k = self.index, self.k

        def search(vectors):
            rows, _, mask, embeddings = index.search_arrays(vectors.numpy(), k)
            return rows.astype(np.int32), mask, embeddings

        rows, mask, embeddings = tf.py_function(
            search,
            [tf.stop_gradient(query_embeddings)],
            [tf.int32, tf.bool, tf.float32],
        )
        batch = query_embeddings.shape[0]
        rows.set_shape([batch, k])
        mask.set_shape([batch, k])
        embeddings.set_shape([batch, k, index.dim])
        return (
            tf.stop_gradient(rows),
            tf.stop_gradient(mask),
            tf.stop_gradient(embeddings),
        )

    def _tensor_search(self, query_embeddings, k=None):
        """`(rows, mask, passage_embeddings)` of the exact top `k` (default
        `self.k`) by inner product, from the in-graph embeddings."""
        k = self.k if k is None else k
        passage_embeddings = tf.convert_to_tensor(self.passage_embeddings)
        num_passages = passage_embeddings.shape[0]
        found = min(k, num_passages)
        scores = tf.matmul(
            query_embeddings, tf.stop_gradient(passage_embeddings), transpose_b=True
        )
        if self.use_approx_max_k:
            _, rows = tf.math.approx_max_k(scores, found)
        else:
            _, rows = blockwise_top_k(scores, found)
        rows = tf.cast(rows, tf.int32)
        mask = tf.ones_like(rows, dtype=tf.bool)
        if found < k:
            padding = [[0, 0], [0, k - found]]
            rows = tf.pad(rows, padding)
            mask = tf.pad(mask, padding, constant_values=False)
        return rows, mask, tf.gather(passage_embeddings, rows)

    def _check_query_shape(self, shape):
        if len(shape) != 2 or (shape[-1] is not None and shape[-1] != self.index.dim):
            raise ValueError(
                f"Expected query embeddings of shape (batch, {self.index.dim}). "
                f"Received: query_embeddings.shape={tuple(shape)}"
            )

    def compute_output_spec(self, query_embeddings):
        self._check_query_shape(query_embeddings.shape)
        batch = query_embeddings.shape[0]
        return {
            "rows": keras.KerasTensor((batch, self.k), "int32"),
            "mask": keras.KerasTensor((batch, self.k), "bool"),
            "doc_scores": keras.KerasTensor((batch, self.k), "float32"),
            "passage_embeddings": keras.KerasTensor(
                (batch, self.k, self.index.dim), "float32"
            ),
        }

    # Export and serialisation.

    def save_own_variables(self, store):
        # The tensor backend's embeddings are a copy of the index's (created on
        # first use of that backend), not state: nothing is saved.
        pass

    def load_own_variables(self, store):
        if len(store.keys()):
            raise ValueError(
                f"PassageRetriever '{self.name}' saves no variables (its passages "
                f"live in the index). Received: {len(store.keys())} variables"
            )
        self.refresh()

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # SavedModel export walks the object graph with save_type="savedmodel".
        if save_type == "savedmodel" and self.backend == "faiss":
            raise ValueError(
                f"Cannot export PassageRetriever '{self.name}' with the 'faiss' "
                "backend: its `tf.py_function` body is not saved in a "
                "SavedModel, so a reloaded model would fail or call an "
                "unrelated Python function. Use "
                "`keras_ragkd.serving.export_model(model, path)` (converts to "
                "the in-graph backend), or call "
                "`keras_ragkd.retrieval.use_backend(model, 'tensor')` first. "
                "Received: backend='faiss'"
            )
        return super()._trackable_children(save_type, **kwargs)

    def get_config(self):
        if self.index.directory is None:
            raise ValueError(
                "A PassageRetriever's config references its index by "
                "directory; call `index.save(directory)` before saving the "
                "model. Received: index.directory=None"
            )
        if self.index.has_unsaved_changes:
            raise ValueError(
                "The index changed (`add`/`rebuild`) since it was saved; call "
                f"`index.save({self.index.directory!r})` before saving the "
                "model. Received: index.has_unsaved_changes=True"
            )
        config = super().get_config()
        config.update(
            {
                "index": self.index.directory,
                "k": self.k,
                "backend": self.backend,
                "use_approx_max_k": self.use_approx_max_k,
            }
        )
        return config


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {BACKENDS}. Received: backend={backend!r}"
        )


def use_backend(model, backend):
    """Switches every `PassageRetriever` inside `model` to `backend`.

    Also drops the model's traced train/test/predict functions so the next
    call retraces with the new backend.

    Args:
        model: a Keras model or layer.
        backend: `"faiss"` or `"tensor"`.

    Returns:
        The list of retrievers found (possibly empty).

    Example:

    >>> import keras, numpy as np
    >>> from keras_ragkd.retrieval import PassageIndex, PassageRetriever, use_backend
    >>> index = PassageIndex.from_embeddings(
    ...     [{"id": "a", "text": "a"}, {"id": "b", "text": "b"}], np.eye(2)
    ... )
    >>> inputs = keras.Input((2,))
    >>> model = keras.Model(inputs, PassageRetriever(index, k=1)(inputs)["rows"])
    >>> [r.backend for r in use_backend(model, "tensor")]
    ['tensor']
    """
    check_backend(backend)
    retrievers = [
        layer for layer in _all_layers(model) if isinstance(layer, PassageRetriever)
    ]
    for retriever in retrievers:
        retriever.set_backend(backend)
    forget_traced_functions(model)
    return retrievers


def forget_traced_functions(model):
    """Drops a model's traced train/test/predict functions (they retrace)."""
    for attribute in ("train_function", "test_function", "predict_function"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)


def _all_layers(model):
    if hasattr(model, "_flatten_layers"):
        return list(model._flatten_layers(include_self=True, recursive=True))
    return [model]
