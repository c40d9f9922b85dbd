"""SavedModel export of RAG models: in-graph retrieval, written atomically."""

import contextlib

import keras
import tensorflow as tf

from keras_ragkd.io_utils import write_folder
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import use_backend
from keras_ragkd.retrieval.retriever import forget_traced_functions

_QUESTIONS = [tf.TensorSpec([None], tf.string, name="questions")]


def retrievers_of(model):
    """Every `PassageRetriever` inside `model`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, PassageRetriever)
    ]


def refuse_approximate_search(model, exact_retrieval):
    """Refuses to export approximate indexes unless told the search may differ.

    An exported model searches exactly (matmul + top-k); FAISS searches an
    HNSW or IVF index approximately, so the two can retrieve different
    passages (10.6 % of 631 questions differed in their top 3 for HNSW32).
    """
    for retriever in retrievers_of(model):
        factory = retriever.index.index_factory
        if not exact_retrieval and factory.replace(" ", "").split(",")[-1] != "Flat":
            raise ValueError(
                "The exported model searches its index exactly (matmul + top-k), "
                f"but this index uses the approximate FAISS factory {factory!r}, so "
                "exported answers could differ from in-process `generate`. Rebuild "
                'the index with `index_factory="Flat"`, or pass `exact_retrieval=True` '
                f"to export with exact search anyway. Received: index_factory={factory!r}"
            )


@contextlib.contextmanager
def in_graph_search(model):
    """Switches every FAISS retriever of `model` to the tensor backend for a while."""
    retrievers = retrievers_of(model)
    previous = [retriever.backend for retriever in retrievers]
    try:
        use_backend(model, "tensor")
        yield
    finally:
        for retriever, backend in zip(retrievers, previous):
            retriever.set_backend(backend)
        forget_traced_functions(model)


_RESOURCE = tf.saved_model.experimental.TrackableResource


def _is_resource(value):
    return isinstance(value, _RESOURCE)


def _resources_of(model):
    """TensorFlow resources held by `model`'s layers, directly or in `tf.Module`s.

    Lookup tables are resources, not variables: a `StringLookup`'s tables
    are attributes of its layer, and a keras-hub `BytePairTokenizer` keeps
    its word cache (a `MutableHashTable`) inside a plain `tf.Module`. Every
    one the exported functions capture must be tracked by the artifact.
    """
    resources = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for value in vars(layer).values():
            if isinstance(value, _RESOURCE):
                resources.append(value)
            elif isinstance(value, tf.Module) and not isinstance(value, keras.layers.Layer):
                resources.extend(value._flatten(predicate=_is_resource))
    return list({id(resource): resource for resource in resources}.values())


def write_atomically(path, write):
    """Calls `write(staging)` on a folder beside `path`, then swaps it in
    (`io_utils.write_folder`)."""
    return write_folder(path, write, kind="export")


def export_question_answerer(model, path, max_length=None, num_beams=1,
                             marginalization=None, verbose=False, exact_retrieval=False):
    """Writes `model` (a `RagQuestionAnswerer`) as a string-in SavedModel.

    Signatures `serve` (questions → `answers`, `passage_ids`,
    `passage_probabilities`) and `retrieve` (→ `passage_ids`,
    `passage_texts`, `passage_probabilities`, `passage_scores`), both on
    `tf.string[None]` questions. The graph holds no Python callback.

    Returns:
        The absolute export path.
    """
    refuse_approximate_search(model, exact_retrieval)

    def write(staging):
        # A plain `tf.Module` tracking the model's TensorFlow variables once:
        # `keras.export.ExportArchive` saves every variable twice (as
        # `variables/` and `_all_variables/`), doubling the artifact.
        module = tf.Module()
        module.model_variables = [variable.value for variable in model.variables]
        module.model_resources = _resources_of(model)
        module.serve = model.answer_function(max_length, num_beams, marginalization)
        module.retrieve = model.retrieve_function()
        signatures = {
            "serve": module.serve.get_concrete_function(),
            "retrieve": module.retrieve.get_concrete_function(),
        }
        tf.saved_model.save(module, staging, signatures=signatures)
        if verbose:
            print(f"Exported `serve` and `retrieve` (questions: tf.string[None]) to {path}")

    with in_graph_search(model):
        return write_atomically(path, write)
