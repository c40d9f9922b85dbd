"""SavedModel export that never embeds a Python (FAISS) callback."""

from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag.exporting import refuse_approximate_search
from keras_ragkd.rag.exporting import in_graph_search
from keras_ragkd.rag.exporting import write_atomically


def export_model(model, path, input_signature=None, verbose=False, exact_retrieval=False,
                 **kwargs):
    """Exports `model` as a TensorFlow SavedModel with in-graph retrieval.

    Every `PassageRetriever` using the `"faiss"` backend (a `tf.py_function`,
    whose Python body a SavedModel cannot hold) is switched to the `"tensor"`
    backend for the export and switched back afterwards, so the artifact is
    self-contained. A `RagQuestionAnswerer` is exported with its string
    signatures (`serve`: questions → answers, passage ids and `P(z|x)`;
    `retrieve`), see `RagQuestionAnswerer.export`; any other model with
    `model.export` and its `serve` endpoint. The export is written to a
    temporary folder beside `path` and then moved into place.

    The exported search is exact: for an approximate index (HNSW, IVF, PQ)
    FAISS in-process and the export can retrieve different passages, so such
    models are refused unless `exact_retrieval=True`.

    Models that tokenise in the graph (e.g. `MiniLMEncoder`) use
    TensorFlow Text ops: `import tensorflow_text` before loading them (no
    other Python code of this package is needed).

    Args:
        model: a built Keras model.
        path: destination folder (replaced if it exists).
        input_signature: optional input spec(s) as for `model.export`, e.g.
            `[tf.TensorSpec([None], tf.string)]` for a model on raw strings
            (not for a `RagQuestionAnswerer`, whose signatures are fixed).
        verbose: bool, print the exported endpoints.
        exact_retrieval: bool, allow exporting approximate indexes with exact
            search.
        **kwargs: decoding settings of a `RagQuestionAnswerer`'s `serve`
            (`max_length`, `num_beams`, `marginalization`).

    Returns:
        The absolute export path.

    Example (a retrieval model; a `RagQuestionAnswerer` exports the same way,
    with its `serve` and `retrieve` string signatures):

    >>> import keras, numpy as np, tempfile, tensorflow as tf
    >>> from keras_ragkd.retrieval import PassageIndex, PassageRetriever
    >>> passages = [{"id": str(i), "text": f"passage {i}"} for i in range(4)]
    >>> index = PassageIndex.from_embeddings(passages, np.eye(4, dtype="float32"))
    >>> queries = keras.Input((4,))
    >>> rows = PassageRetriever(index, k=2)(queries)["rows"]  # FAISS in process
    >>> model = keras.Model(queries, rows)
    >>> path = export_model(model, tempfile.mkdtemp() + "/export",
    ...                     input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    >>> reloaded = tf.saved_model.load(path)  # in-graph search: no FAISS needed
    >>> int(reloaded.serve(tf.constant([[0.0, 0.0, 1.0, 0.0]]))[0, 0])
    2
    """
    if isinstance(model, RagQuestionAnswerer):
        if input_signature is not None:
            raise ValueError(
                "A `RagQuestionAnswerer` exports with fixed string signatures. "
                f"Received: input_signature={input_signature!r}"
            )
        return model.export(path, verbose=verbose, exact_retrieval=exact_retrieval, **kwargs)
    if kwargs:
        raise ValueError(
            "Decoding settings apply to `RagQuestionAnswerer` models only. "
            f"Received: {sorted(kwargs)}"
        )
    refuse_approximate_search(model, exact_retrieval)

    def write(staging):
        model.export(
            staging, format="tf_saved_model", input_signature=input_signature,
            verbose=verbose,
        )

    with in_graph_search(model):
        return write_atomically(path, write)
