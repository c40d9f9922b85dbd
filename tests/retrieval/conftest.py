"""Session fixtures: the countryinfo knowledge base encoded once with MiniLM.

The MiniLM embeddings of all passages and questions are computed once per
test run and cached in the pytest base temp folder shared by xdist workers
(guarded by a file lock, so two workers never encode the same thing twice).
"""

import fcntl
import os

import numpy as np
import pytest

from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.retrieval import MiniLMEncoder
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval.passage import as_passages
from keras_ragkd.retrieval.passage import passage_text


@pytest.fixture(scope="session")
def minilm_encoder():
    return MiniLMEncoder(sequence_length=64)


@pytest.fixture(scope="session")
def countries():
    """`(passages, questions)`: every countryinfo passage, and every third
    question of `country_questions("all")` (all types and templates; ~1060
    questions keep the once-per-run MiniLM encoding short)."""
    return country_passages(), country_questions("all")[::3]


def _shared_cache_folder(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / "minilm_countries_cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def country_vectors(tmp_path_factory, minilm_encoder, countries):
    """MiniLM `(passage_vectors, question_vectors)`, computed once per run."""
    passages, questions = countries
    folder = _shared_cache_folder(tmp_path_factory)
    cache = folder / f"{minilm_encoder.identity.replace('/', '_')}.npz"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache.exists():
            passage_vectors = minilm_encoder.encode(
                [passage_text(p) for p in as_passages(passages)],
                batch_size=128,
                verbose=0,
            )
            question_vectors = minilm_encoder.encode(
                [q["question"] for q in questions], batch_size=128, verbose=0
            )
            temporary = folder / f"tmp-{os.getpid()}.npz"
            np.savez(
                temporary, passages=passage_vectors, questions=question_vectors
            )
            os.replace(temporary, cache)
    with np.load(cache, allow_pickle=False) as arrays:
        return arrays["passages"], arrays["questions"]


@pytest.fixture(scope="session")
def country_index(countries, country_vectors, minilm_encoder):
    """An exact ("Flat") MiniLM index of the countryinfo passages."""
    passages, _ = countries
    return PassageIndex.from_embeddings(
        passages, country_vectors[0], "Flat", encoder=minilm_encoder
    )
