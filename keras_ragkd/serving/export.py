"""SavedModel export that never embeds a Python (FAISS) callback."""

import os
import shutil
import tempfile

from keras_ragkd.io_utils import replace_directory
from keras_ragkd.retrieval import use_backend
from keras_ragkd.retrieval.retriever import PassageRetriever
from keras_ragkd.retrieval.retriever import forget_traced_functions


def export_model(model, path, input_signature=None, verbose=False):
    """Exports `model` as a TensorFlow SavedModel with in-graph retrieval.

    Every `PassageRetriever` using the `"faiss"` backend (a `tf.py_function`,
    whose Python body a SavedModel cannot hold) is switched to the `"tensor"`
    backend for the export and switched back afterwards, so the artifact is
    self-contained: reload it anywhere with `tf.saved_model.load(path)` and
    call `serve(...)`. For a `"Flat"` index the exported model returns the same
    passages as the original one. The export is written to a temporary folder
    beside `path` and then moved into place.

    Models that tokenise in the graph (e.g. `MiniLMEncoder`) use
    TensorFlow Text ops: `import tensorflow_text` before loading them (no
    other Python code of this package is needed).

    Args:
        model: a built Keras model.
        path: destination folder (replaced if it exists).
        input_signature: optional input spec(s) as for `model.export`, e.g.
            `[tf.TensorSpec([None], tf.string)]` for a model on raw strings.
        verbose: bool, print the exported endpoints.

    Returns:
        The absolute export path.

    Example:

    ```python
    from keras_ragkd.serving import export_model
    export_model(model, "/tmp/rag_export")
    import tensorflow_text  # only for models with in-graph tokenizers
    reloaded = tf.saved_model.load("/tmp/rag_export")
    outputs = reloaded.serve(tf.constant(["What is the capital of France?"]))
    ```
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    retrievers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, PassageRetriever)
    ]
    previous_backends = [retriever.backend for retriever in retrievers]
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.export-", dir=parent)
    try:
        use_backend(model, "tensor")
        model.export(
            staging,
            format="tf_saved_model",
            input_signature=input_signature,
            verbose=verbose,
        )
        replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for retriever, backend in zip(retrievers, previous_backends):
            retriever.set_backend(backend)
        forget_traced_functions(model)
    return path
