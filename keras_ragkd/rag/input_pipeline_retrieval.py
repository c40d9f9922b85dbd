"""Retrieval in the input pipeline: FAISS candidates from `tf.data`, scores in the model.

For knowledge bases too large for device memory, and for TPUs (whose
compiled step cannot call FAISS), the search moves out of the model:
`with_retrieved_passages` maps a FAISS search over a `tf.data` pipeline of
preprocessed batches and adds each batch's top-`k` candidates to its inputs:

- `"candidate_rows"`: int32 `(batch, k)`, rows of the index (0 where
  `candidate_mask` is False);
- `"candidate_mask"`: bool `(batch, k)`, False for missing results;
- `"candidate_embeddings"`: float32 `(batch, k, dim)`, the passages' vectors;
- `"candidate_token_ids"`: int32 `(batch, k, length)`, the passages' tokens.

A `RetrievalAugmentedGenerator` given these inputs skips its retriever (it
may have none) and recomputes the scores `<q(x), d_z>` in the graph from the
live query encoder and the candidates' vectors (`retrieved_from_candidates`),
so the query encoder still gets its gradient through `P(z|x)`, and the
compiled step holds no `tf.py_function` (it runs with `jit_compile=True` and
on TPUs).

The pipeline embeds the queries with a **snapshot** of the query encoder's
weights taken when the pipeline is made (constants of the `tf.data` graph,
through `stateless_call`), not with the live variables: a prefetching
pipeline runs ahead of the train step in its own threads, so reading live
weights would embed each batch with whatever step the optimizer had reached
at that moment (not reproducible), and on a TPU or under a distribution
strategy the live variables sit on the devices, not on the host that runs the
pipeline. With a frozen query encoder (the default of
`build_rag_question_answerer`: the index was embedded by it) the candidates
are exactly those the in-model `faiss` backend retrieves; with a trained one
they are those of the snapshot (stale retrieval, refreshed by building the
pipeline again, e.g. each epoch alongside a `PassageReindexer`), while the
scores, and so the gradient, use the live encoder.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.rag.passage_tokens import check_passage_token_ids
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval.passage_index import check_k

CANDIDATE_KEYS = (
    "candidate_rows",
    "candidate_mask",
    "candidate_embeddings",
    "candidate_token_ids",
)


def has_candidates(inputs):
    """Whether model inputs carry retrieved candidates (all of `CANDIDATE_KEYS`).

    Raises:
        ValueError: if only some of the candidate keys are present.
    """
    if not isinstance(inputs, dict):
        return False
    present = [key for key in CANDIDATE_KEYS if key in inputs]
    if present and len(present) != len(CANDIDATE_KEYS):
        raise ValueError(
            f"Inputs with retrieved candidates need all of {list(CANDIDATE_KEYS)} "
            f"(as `with_retrieved_passages` adds them). Received: keys {sorted(inputs)}"
        )
    return bool(present)


def retrieved_from_candidates(query_embeddings, inputs):
    """The retriever's outputs, from the candidates in `inputs`.

    The scores are `<q, d_z>` recomputed from `query_embeddings` (gradients
    flow into them) and the stop-gradient candidate vectors, 0 where the mask
    is False: the same arithmetic as `PassageRetriever`.

    Args:
        query_embeddings: float `(batch, dim)`, the live query encoder's output.
        inputs: a dict holding `CANDIDATE_KEYS`.

    Returns:
        `PassageRetriever`'s outputs (`"rows"`, `"mask"`, `"doc_scores"`,
        `"passage_embeddings"`) and the candidates' `"passage_token_ids"`.

    Example:

    >>> import numpy as np
    >>> candidates = {"candidate_rows": [[1, 0]], "candidate_mask": [[True, False]],
    ...               "candidate_embeddings": [[[0.0, 2.0], [1.0, 0.0]]],
    ...               "candidate_token_ids": [[[4, 5], [0, 0]]]}
    >>> retrieved = retrieved_from_candidates(np.array([[1.0, 3.0]]), candidates)
    >>> retrieved["doc_scores"].numpy().tolist()
    [[6.0, 0.0]]
    """
    query_embeddings = tf.cast(query_embeddings, tf.float32)
    embeddings = tf.stop_gradient(
        tf.cast(inputs["candidate_embeddings"], tf.float32)
    )
    if (
        len(embeddings.shape) != 3
        or embeddings.shape[-1] is not None
        and query_embeddings.shape[-1] is not None
        and embeddings.shape[-1] != query_embeddings.shape[-1]
    ):
        raise ValueError(
            "Expected `candidate_embeddings` of shape (batch, k, "
            f"{query_embeddings.shape[-1]}) (the query embeddings' size). "
            f"Received: candidate_embeddings.shape={tuple(embeddings.shape)}"
        )
    mask = tf.cast(inputs["candidate_mask"], tf.bool)
    doc_scores = tf.einsum("bd,bkd->bk", query_embeddings, embeddings)
    return {
        "rows": tf.cast(inputs["candidate_rows"], tf.int32),
        "mask": mask,
        "doc_scores": doc_scores * tf.cast(mask, doc_scores.dtype),
        "passage_embeddings": embeddings,
        "passage_token_ids": tf.cast(inputs["candidate_token_ids"], tf.int32),
    }


def with_retrieved_passages(dataset, index, query_encoder, k, passage_token_ids):
    """Adds each batch's top-`k` FAISS candidates to a dataset's model inputs.

    The search runs in the pipeline, on the host (FAISS in a `tf.py_function`
    inside `dataset.map`): the index and the passage tokens stay in host
    memory, and the model needs neither (give its `RetrievalAugmentedGenerator`
    `retriever=None`). See the module docstring for why the queries are
    embedded with a snapshot of `query_encoder`'s current weights.

    Args:
        dataset: a batched `tf.data.Dataset` of preprocessed model inputs `x`
            (a dict with `"query"`, what `query_encoder` takes), or of
            `(x, y)` / `(x, y, sample_weight)`, e.g. from
            `RagQuestionAnswerer.preprocess`.
        index: the `PassageIndex` to search (searched as it is at each batch,
            like the in-model `faiss` backend, so a `PassageReindexer`'s
            updates are seen).
        query_encoder: the built Keras layer or model embedding `"query"`
            into the index's space; its weights are copied now.
        k: positive int, candidates per query (at least the model's `num_docs`).
        passage_token_ids: int array `(len(index), length)`, the tokens of
            each index row (e.g. `preprocessor.tokenize_passages(texts)`).

    Returns:
        The dataset with `CANDIDATE_KEYS` added to every `x`.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> from keras_ragkd.retrieval import PassageIndex
    >>> vectors = np.eye(3, dtype="float32")
    >>> index = PassageIndex.from_embeddings(
    ...     [{"id": str(i), "text": f"passage {i}"} for i in range(3)], vectors)
    >>> encoder = keras.Sequential([keras.Input((3,)), keras.layers.UnitNormalization()])
    >>> queries = tf.data.Dataset.from_tensor_slices(
    ...     {"query": [[0.0, 1.0, 0.5], [2.0, 0.0, 1.0]]}).batch(2)
    >>> dataset = with_retrieved_passages(queries, index, encoder, k=2,
    ...     passage_token_ids=[[5, 6], [7, 0], [8, 9]])
    >>> x = next(iter(dataset))
    >>> x["candidate_rows"].numpy().tolist()
    [[1, 2], [0, 2]]
    >>> x["candidate_token_ids"].shape, x["candidate_embeddings"].shape
    (TensorShape([2, 2, 2]), TensorShape([2, 2, 3]))
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Expected a batched `tf.data.Dataset`. Received: dataset={dataset!r:.200}"
        )
    if not isinstance(index, PassageIndex):
        raise TypeError(f"Expected a `PassageIndex`. Received: index={index!r:.200}")
    check_k(k)
    token_ids = check_passage_token_ids(passage_token_ids, len(index))
    embed = _snapshot_embedder(query_encoder)
    search = _host_search(index, int(k), token_ids)

    def add_candidates(*element):
        x = element[0]
        if not isinstance(x, dict) or "query" not in x:
            raise ValueError(
                "Expected dataset elements whose model inputs are a dict with "
                '"query" (preprocessed batches). Received: '
                f"{x if not isinstance(x, dict) else sorted(x)}"
            )
        x = dict(x, **search(embed(x["query"])))
        return x if len(element) == 1 else (x,) + element[1:]

    return dataset.map(add_candidates)


def _snapshot_embedder(query_encoder):
    """`query → embeddings` with the encoder's current weights as constants."""
    if not isinstance(query_encoder, keras.layers.Layer) or not query_encoder.built:
        raise ValueError(
            "Expected a built Keras layer or model as `query_encoder` (its "
            f"weights are copied). Received: query_encoder={query_encoder!r:.200}"
        )
    trainable = [
        tf.constant(keras.ops.convert_to_numpy(v)) for v in query_encoder.trainable_variables
    ]
    non_trainable = [
        tf.constant(keras.ops.convert_to_numpy(v))
        for v in query_encoder.non_trainable_variables
    ]

    def embed(query):
        embeddings, _ = query_encoder.stateless_call(
            trainable, non_trainable, query, training=False
        )
        return tf.cast(embeddings, tf.float32)

    return embed


def _host_search(index, k, token_ids):
    """`embeddings → candidates`: FAISS and a token gather, in `tf.py_function`."""

    def search(vectors):
        rows, _, mask, embeddings = index.search_arrays(vectors.numpy(), k)
        return rows.astype(np.int32), mask, embeddings, token_ids[rows]

    def search_batch(query_embeddings):
        if len(query_embeddings.shape) != 2 or query_embeddings.shape[-1] != index.dim:
            raise ValueError(
                f"Expected query embeddings of shape (batch, {index.dim}) (the "
                "index's size). Received: query_embeddings.shape="
                f"{tuple(query_embeddings.shape)}"
            )
        rows, mask, embeddings, tokens = tf.py_function(
            search, [query_embeddings], [tf.int32, tf.bool, tf.float32, tf.int32]
        )
        batch = query_embeddings.shape[0]
        rows.set_shape([batch, k])
        mask.set_shape([batch, k])
        embeddings.set_shape([batch, k, index.dim])
        tokens.set_shape([batch, k, token_ids.shape[1]])
        return dict(zip(CANDIDATE_KEYS, (rows, mask, embeddings, tokens)))

    return search_batch
