"""Retrieval quality on the countryinfo knowledge base with MiniLM embeddings."""

import collections

import numpy as np
import pytest

from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever


def recall_by_type(index, questions, question_vectors, k):
    result = index.search(question_vectors, k=k)
    hits = collections.defaultdict(list)
    for question, found in zip(questions, result.passage_ids):
        hits[question["type"]].append(question["passage_id"] in found)
    return {kind: float(np.mean(values)) for kind, values in hits.items()}


def test_minilm_recall_at_5(country_index, countries, country_vectors):
    _, questions = countries
    recall = recall_by_type(country_index, questions, country_vectors[1], k=5)
    print("MiniLM recall@5 by question type:", recall)
    assert set(recall) == {
        "capital",
        "country_of_capital",
        "region",
        "subregion",
        "demonym",
        "currency",
    }
    assert recall["capital"] >= 0.95
    assert min(recall.values()) >= 0.95
    overall = np.mean([q["passage_id"] in ids for q, ids in zip(
        questions, country_index.search(country_vectors[1], k=5).passage_ids
    )])
    assert overall >= 0.95


def test_string_queries_use_the_encoder(country_index):
    result = country_index.search(
        ["What is the capital of France?", "Which currency is used in Japan?"], k=5
    )
    assert "france/capital" in result.passage_ids[0]
    assert "japan/currency" in result.passage_ids[1]


@pytest.mark.parametrize("factory", ["HNSW32", "IVF32,Flat"])
def test_approximate_index_recall_at_10_against_flat(
    factory, countries, country_index, country_vectors
):
    passages, _ = countries
    approximate = PassageIndex.from_embeddings(passages, country_vectors[0], factory)
    queries = country_vectors[1]
    exact_rows = country_index.search(queries, k=10).rows
    approximate_rows = approximate.search(queries, k=10).rows
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(exact_rows, approximate_rows)]
    )
    print(f"{factory} recall@10 vs Flat: {recall:.4f}")
    assert recall >= 0.95


def test_faiss_and_tensor_backends_agree(country_index, country_vectors):
    queries = country_vectors[1][:512]
    faiss_outputs = PassageRetriever(country_index, k=10, backend="faiss")(queries)
    tensor_outputs = PassageRetriever(country_index, k=10, backend="tensor")(queries)
    np.testing.assert_allclose(
        faiss_outputs["doc_scores"], tensor_outputs["doc_scores"], atol=1e-5
    )
    faiss_rows = faiss_outputs["rows"].numpy()
    tensor_rows = tensor_outputs["rows"].numpy()
    scores = faiss_outputs["doc_scores"].numpy()
    # Same passages; only exactly tied scores may be ordered differently.
    tied = np.zeros_like(scores, dtype=bool)
    tied[:, 1:] |= np.isclose(scores[:, 1:], scores[:, :-1], atol=1e-6)
    tied[:, :-1] |= tied[:, 1:]
    assert np.mean(faiss_rows == tensor_rows) >= 0.99
    np.testing.assert_array_equal(faiss_rows[~tied], tensor_rows[~tied])
