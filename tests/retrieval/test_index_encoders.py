"""A saved index records its encoder; a loaded one searches strings right away."""

import json
import os

import numpy as np
import pytest

from keras_ragkd.retrieval import KerasTextEncoder
from keras_ragkd.retrieval import MiniLMEncoder
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import TfidfQueryEncoder
from keras_ragkd.retrieval import check_index_factory
from keras_ragkd.retrieval import keras_query_encoder
from keras_ragkd.retrieval.encoder_records import check_query_encoder

QUERIES = ["What is the capital of Peru?", "Which currency is used in Japan?"]


@pytest.fixture(scope="module")
def passages(countries):
    wanted = ("peru/", "japan/", "france/", "kenya/", "chile/")
    return [p for p in countries[0] if p["id"].startswith(wanted)]


@pytest.fixture(scope="module")
def tfidf(passages):
    return TfidfEncoder(dim=16).fit([p["title"] + ". " + p["text"] for p in passages])


@pytest.fixture()
def tfidf_folder(tmp_path, passages, tfidf):
    PassageIndex.build(passages, tfidf, verbose=0).save(tmp_path / "kb")
    return tmp_path / "kb"


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder, manifest):
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_tfidf_index_restores_its_encoder(tfidf_folder, tfidf):
    manifest = _manifest(tfidf_folder)
    assert manifest["encoder"] == {
        "class_name": "TfidfEncoder",
        "config": {"dim": 16, "ngram_range": [1, 2], "seed": 0,
                   "vocabulary_size": len(tfidf.vocabulary)},
    }
    data = tfidf_folder / manifest["data_folder"]
    assert sorted(os.listdir(data)) == sorted(
        ["index.faiss", "passages.jsonl", "embeddings.npy", "tfidf_encoder.json",
         "tfidf_encoder.npz"])
    loaded = PassageIndex.load(tfidf_folder)
    assert isinstance(loaded.encoder, TfidfEncoder)
    assert loaded.encoder.identity == tfidf.identity
    result = loaded.search(QUERIES, k=1)
    assert result.passage_ids == [["peru/capital"], ["japan/currency"]]
    np.testing.assert_allclose(result.scores, PassageIndex.load(
        tfidf_folder, encoder=tfidf).search(QUERIES, k=1).scores)
    assert PassageIndex.load(tfidf_folder, encoder=None).encoder is None
    # Saving a loaded index keeps the record and the files.
    loaded.save(tfidf_folder)
    assert PassageIndex.load(tfidf_folder).encoder.identity == tfidf.identity


def test_tampered_tfidf_files_are_refused(tfidf_folder, passages):
    manifest = _manifest(tfidf_folder)
    data = tfidf_folder / manifest["data_folder"]
    # Another fitted vocabulary, with the manifest's checksums updated to match:
    # only the identity check can notice.
    other = TfidfEncoder(dim=16).fit([p["text"] for p in passages][::-1] + ["extra words"])
    other.write_files(data)
    from keras_ragkd.io_utils import sha256_of

    for key, entry in manifest["files"].items():
        path = data / entry["path"]
        entry.update(bytes=path.stat().st_size, sha256=sha256_of(path))
    _write_manifest(tfidf_folder, manifest)
    with pytest.raises(ValueError, match="does not rebuild into the one its embeddings came"):
        PassageIndex.load(tfidf_folder)
    assert len(PassageIndex.load(tfidf_folder, encoder=None)) == len(passages)

    (data / "tfidf_encoder.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"Received: file='.*tfidf_encoder.json' of 7 bytes"):
        PassageIndex.load(tfidf_folder)
    entry = manifest["files"]["encoder:tfidf_encoder.json"]
    entry["bytes"] = 7
    _write_manifest(tfidf_folder, manifest)
    with pytest.raises(ValueError, match="corrupted"):
        PassageIndex.load(tfidf_folder)
    with pytest.raises(ValueError, match="TF-IDF encoder configuration is not valid JSON"):
        PassageIndex.load(tfidf_folder, verify_checksums=False)
    info = PassageIndex.describe(tfidf_folder)
    assert info["files"]["tfidf_encoder.json"]["state"] == "checksum mismatch"
    entry["bytes"] = 99
    _write_manifest(tfidf_folder, manifest)
    info = PassageIndex.describe(tfidf_folder)
    assert info["checksums"] == "damaged"
    assert info["files"]["tfidf_encoder.json"]["state"] == "size mismatch"


def test_inconsistent_tfidf_arrays_are_refused(tmp_path, tfidf):
    tfidf.save(tmp_path)
    with np.load(tmp_path / "tfidf_encoder.npz") as arrays:
        idf, components = arrays["idf"], arrays["components"]
    np.savez(tmp_path / "tfidf_encoder.npz", idf=idf[:-1], components=components)
    with pytest.raises(ValueError, match=r"Received: directory=.*idf.shape=\("):
        TfidfEncoder.load(tmp_path)
    components[0, 0] = np.nan
    np.savez(tmp_path / "tfidf_encoder.npz", idf=idf, components=components)
    with pytest.raises(ValueError, match="all finite"):
        TfidfEncoder.load(tmp_path)


def test_manifest_without_encoder_record_still_loads(tfidf_folder):
    # Indexes saved before encoders were recorded have no "encoder" key.
    manifest = _manifest(tfidf_folder)
    del manifest["encoder"]
    for key in [k for k in manifest["files"] if k.startswith("encoder:")]:
        del manifest["files"][key]
    _write_manifest(tfidf_folder, manifest)
    loaded = PassageIndex.load(tfidf_folder)
    assert loaded.encoder is None
    with pytest.raises(ValueError, match="Received: encoder=None"):
        loaded.search(QUERIES, k=1)
    assert PassageIndex.describe(tfidf_folder)["encoder"]["restorable"] is False


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(encoder={"class_name": "Pickled", "config": {}}),
         "encoder` must be null or"),
        (lambda m: m.update(encoder={"class_name": "MiniLMEncoder",
                                     "config": {"sequence_length": "64"}}),
         "encoder` must be null or"),
        (lambda m: m["files"]["index"].update(path="../../etc/passwd"),
         "naming files of its data folder"),
        (lambda m: m.update(data_folder="/tmp"), "naming files of its data folder"),
    ],
)
def test_malformed_manifests_are_refused(tfidf_folder, change, message):
    manifest = _manifest(tfidf_folder)
    change(manifest)
    _write_manifest(tfidf_folder, manifest)
    with pytest.raises(ValueError, match=message):
        PassageIndex.load(tfidf_folder)


def test_custom_encoders_record_nothing(tmp_path, passages, tfidf):
    layer = TfidfQueryEncoder.from_encoder(tfidf)
    index = PassageIndex.build(passages, KerasTextEncoder(layer), verbose=0)
    index.save(tmp_path / "kb")
    assert _manifest(tmp_path / "kb")["encoder"] is None
    assert PassageIndex.load(tmp_path / "kb").encoder is None
    # An encoder assigned without rebuilding did not produce the vectors.
    index.encoder = TfidfEncoder(dim=8).fit([p["text"] for p in passages])
    index.save(tmp_path / "kb")
    assert _manifest(tmp_path / "kb")["encoder"] is None


def test_minilm_index_rebuilds_its_encoder_on_first_use(tmp_path, passages, minilm_encoder):
    PassageIndex.build(passages, minilm_encoder, verbose=0).save(tmp_path / "kb")
    assert _manifest(tmp_path / "kb")["encoder"] == {
        "class_name": "MiniLMEncoder", "config": {"sequence_length": 64, "preset": None},
    }
    loaded = PassageIndex.load(tmp_path / "kb")
    assert loaded._encoder is None  # Not built yet: loading stays fast.
    loaded.save(tmp_path / "copy")  # The record survives a save without a rebuild.
    assert _manifest(tmp_path / "copy")["encoder"]["class_name"] == "MiniLMEncoder"
    assert loaded.search(QUERIES, k=1).passage_ids == [["peru/capital"], ["japan/currency"]]
    assert isinstance(loaded.encoder, MiniLMEncoder)
    assert loaded.encoder.identity == minilm_encoder.identity

    # Embeddings from a fine-tuned MiniLM: the pretrained one is not theirs.
    manifest = _manifest(tmp_path / "copy")
    manifest["encoder_identity"] = "all-MiniLM-L6-v2/seq64/0000000000000000"
    _write_manifest(tmp_path / "copy", manifest)
    stale = PassageIndex.load(tmp_path / "copy")
    with pytest.raises(ValueError, match="for a fine-tuned encoder pass it"):
        stale.search(QUERIES, k=1)


def test_keras_query_encoder_and_its_check(tmp_path, passages, tfidf, tfidf_folder):
    index = PassageIndex.load(tfidf_folder)
    layer = keras_query_encoder(index.encoder)
    assert isinstance(layer, TfidfQueryEncoder) and layer.identity == index.encoder_identity
    check_query_encoder(layer, index)
    other = keras_query_encoder(TfidfEncoder(dim=8).fit([p["text"] for p in passages]))
    with pytest.raises(ValueError, match="Received: index.encoder_identity='tfidf-svd/16/"):
        check_query_encoder(other, index)
    with pytest.raises(TypeError, match="Received: encoder="):
        keras_query_encoder(object())


def test_check_index_factory():
    assert check_index_factory("Flat", 4, 1).d == 4
    assert not check_index_factory("IVF4,Flat", 4, 4).is_trained
    with pytest.raises(ValueError, match="Received: index_factory='Nope'"):
        check_index_factory("Nope", 4, 10)
    with pytest.raises(ValueError, match="at least 16 passages.*Received: num_passages=3"):
        check_index_factory("IVF16,Flat", 4, 3)
    with pytest.raises(ValueError, match="Received: index_factory=None"):
        check_index_factory(None, 4, 3)
