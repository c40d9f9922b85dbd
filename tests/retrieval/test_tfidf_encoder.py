import json
import os

import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval.tfidf_encoder import TOKEN_PATTERN


@pytest.fixture(scope="module")
def texts(countries):
    return [p["title"] + ". " + p["text"] for p in countries[0][:300]]


def test_matches_scikit_learn_pipeline(texts):
    encoder = TfidfEncoder(dim=32, ngram_range=(1, 2), seed=0).fit(texts)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN)
    tfidf = vectorizer.fit_transform(texts)
    svd = TruncatedSVD(n_components=32, random_state=0).fit(tfidf)
    reference = svd.transform(vectorizer.transform(texts[:20]))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    vectors = encoder.encode(texts[:20])
    assert vectors.shape == (20, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_tfidf_vectors_match_scikit_learn_before_the_svd(texts):
    encoder = TfidfEncoder(dim=8).fit(texts)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN).fit(texts)
    queries = texts[:20] + ["What is the capital of Peru?", "zzz"]
    reference = vectorizer.transform(queries).toarray()
    columns = [encoder.vocabulary[t] for t in vectorizer.get_feature_names_out()]
    vectors = encoder.tfidf_vectors(queries).toarray()[:, columns]
    np.testing.assert_allclose(vectors, reference, atol=1e-12)
    assert np.all(vectors[-1] == 0.0)


def test_save_load_round_trip_without_pickle(tmp_path, texts):
    encoder = TfidfEncoder(dim=16).fit(texts)
    encoder.save(tmp_path / "tfidf")
    assert sorted(p.name for p in (tmp_path / "tfidf").iterdir()) == [
        "tfidf_encoder.json",
        "tfidf_encoder.npz",
    ]
    loaded = TfidfEncoder.load(tmp_path / "tfidf")
    assert loaded.identity == encoder.identity
    np.testing.assert_allclose(loaded.encode(texts[:5]), encoder.encode(texts[:5]))


def test_a_save_killed_between_its_two_files_keeps_the_previous_encoder(
    tmp_path, texts, monkeypatch
):
    previous = TfidfEncoder(dim=8).fit(texts[:100])
    previous.save(tmp_path / "tfidf")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the JSON was written")

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        TfidfEncoder(dim=8).fit(texts[100:200]).save(tmp_path / "tfidf")
    loaded = TfidfEncoder.load(tmp_path / "tfidf")
    assert loaded.identity == previous.identity
    assert os.listdir(tmp_path) == ["tfidf"]


def test_identity_depends_on_training_data(texts):
    a = TfidfEncoder(dim=8).fit(texts[:100])
    b = TfidfEncoder(dim=8).fit(texts[100:200])
    assert a.identity != b.identity and a.identity.startswith("tfidf-svd/8/")


def test_errors_are_clear(tmp_path, texts):
    with pytest.raises(ValueError, match="Received: components=None"):
        TfidfEncoder().encode(["not fitted"])
    with pytest.raises(ValueError, match="Received: dim=0"):
        TfidfEncoder(dim=0)
    with pytest.raises(TypeError, match="Received: text=None"):
        TfidfEncoder(dim=4).fit(texts[:10] + [None])
    with pytest.raises(ValueError, match="Received: missing file="):
        TfidfEncoder.load(tmp_path)


def test_load_refuses_an_unknown_format_version(tmp_path, texts):
    TfidfEncoder(dim=4).fit(texts[:50]).save(tmp_path)
    config_path = tmp_path / "tfidf_encoder.json"
    config = json.loads(config_path.read_text())
    assert config["format_version"] == 1
    config["format_version"] = 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"reads version 1 only.*format_version=2"):
        TfidfEncoder.load(tmp_path)
    del config["format_version"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"reads version 1 only.*format_version=None"):
        TfidfEncoder.load(tmp_path)
