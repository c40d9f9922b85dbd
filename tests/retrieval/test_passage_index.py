import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.retrieval import Passage
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval.passage import passage_text

FEW = [
    {"id": "fr", "title": "France", "text": "The capital of France is Paris."},
    {"id": "it", "title": "Italy", "text": "The capital of Italy is Rome."},
    {"id": "jp", "title": "Japan", "text": "The currency of Japan is JPY."},
]


@pytest.fixture(scope="module")
def tfidf(countries):
    passages, _ = countries
    return TfidfEncoder(dim=64).fit([p["title"] + ". " + p["text"] for p in passages])


@pytest.fixture(scope="module")
def tfidf_index(countries, tfidf):
    passages, _ = countries
    return PassageIndex.build(passages, tfidf, verbose=0)


def test_build_numbers_rows_in_insertion_order(countries, tfidf_index):
    passages, _ = countries
    assert len(tfidf_index) == len(passages)
    assert [p.id for p in tfidf_index.passages] == [p["id"] for p in passages]
    assert tfidf_index.row_of("france/capital") == [
        p["id"] for p in passages
    ].index("france/capital")
    assert tfidf_index.get("france/capital").text == "The capital of France is Paris."
    assert tfidf_index.embeddings.shape == (len(passages), 64)
    np.testing.assert_allclose(np.linalg.norm(tfidf_index.embeddings, axis=1), 1, atol=1e-5)


def test_search_strings_finds_the_fact(tfidf_index):
    result = tfidf_index.search(["What is the capital of France?"], k=3)
    assert "france/capital" in result.passage_ids[0]
    assert result.rows.dtype == np.int64 and result.rows.shape == (1, 3)
    assert result.mask.all()
    np.testing.assert_allclose(
        result.embeddings[0], tfidf_index.embeddings[result.rows[0]]
    )
    assert np.all(np.diff(result.scores[0]) <= 1e-6)


def test_search_vectors_scores_are_inner_products(tfidf, tfidf_index):
    queries = tfidf.encode(["Which currency is used in Japan?", "Kabul"])
    result = tfidf_index.search(queries, k=4)
    expected = np.einsum("nd,nkd->nk", queries, result.embeddings)
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)
    assert result.passage_ids[0][0] == "japan/currency"


def test_k_larger_than_index_is_masked_not_gathered_with_minus_one():
    index = PassageIndex.from_embeddings(FEW, np.eye(3, 8, dtype="float32"))
    query = np.array([[1.0, 0.5, 0.25, 0, 0, 0, 0, 0]], dtype="float32")
    result = index.search(query, k=5)
    assert result.mask.tolist() == [[True, True, True, False, False]]
    assert result.rows.tolist() == [[0, 1, 2, 0, 0]]
    np.testing.assert_allclose(result.scores, [[1.0, 0.5, 0.25, 0.0, 0.0]])
    assert result.passage_ids == [["fr", "it", "jp"]]


def test_add_appends_rows_and_is_searchable(tfidf):
    index = PassageIndex.build(FEW[:2], tfidf, verbose=0)
    index.add([Passage(id="jp", title="Japan", text="The currency of Japan is JPY.")])
    assert len(index) == 3 and index.row_of("jp") == 2
    assert index.search(["currency of Japan"], k=1).passage_ids == [["jp"]]
    with pytest.raises(ValueError, match="Received: duplicate id='jp'"):
        index.add([{"id": "jp", "text": "again"}])
    assert len(index) == 3


def test_title_is_encoded_with_the_text():
    assert passage_text(Passage("a", "Its capital is Paris.", "France")) == (
        "France. Its capital is Paris."
    )
    assert passage_text(Passage("a", "No title.")) == "No title."


@pytest.mark.parametrize(
    "passages, error, message",
    [
        ([], ValueError, r"Received: passages=\[\]"),
        ([FEW[0], dict(FEW[0])], ValueError, "Received: duplicate id='fr'"),
        ([{"id": "a", "text": 3}], TypeError, "Received: text=3"),
        ([{"id": "", "text": "x"}], ValueError, "Received: id=''"),
        ([{"text": "no id"}], ValueError, "Received: passage="),
        (["just a string"], TypeError, "Received: passage='just a string'"),
        ("not a list", TypeError, "Received: passages='not a list'"),
    ],
)
def test_bad_passages_are_refused(passages, error, message):
    with pytest.raises(error, match=message):
        PassageIndex.from_embeddings(passages, np.ones((max(len(passages), 1), 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused(bad):
    vectors = np.eye(3, 4, dtype="float32")
    vectors[1, 2] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        PassageIndex.from_embeddings(FEW, vectors)
    index = PassageIndex.from_embeddings(FEW, np.eye(3, 4))
    with pytest.raises(ValueError, match="NaN/inf"):
        index.search(vectors, k=1)


def test_wrong_shapes_and_k_are_refused():
    index = PassageIndex.from_embeddings(FEW, np.eye(3, 4))
    with pytest.raises(ValueError, match=r"Received: queries.shape=\(1, 5\)"):
        index.search(np.ones((1, 5)), k=1)
    with pytest.raises(ValueError, match=r"Received: embeddings.shape=\(2, 4\)"):
        PassageIndex.from_embeddings(FEW, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Received: embeddings.shape=\(1, 3\)"):
        index.add([{"id": "x", "text": "x"}], embeddings=np.ones((1, 3)))
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="Received: k="):
            index.search(np.ones((1, 4)), k=k)
    with pytest.raises(ValueError, match="Received: encoder=None"):
        index.search(["a string query needs an encoder"], k=1)
    with pytest.raises(KeyError, match="Received: passage_id='nope'"):
        index.get("nope")


def test_index_factory_errors_are_clear():
    vectors = np.random.default_rng(0).normal(size=(100, 16))
    passages = [{"id": str(i), "text": "t"} for i in range(100)]
    with pytest.raises(ValueError, match="at least 256 passages.*Received: num_passages=100"):
        PassageIndex.from_embeddings(passages, vectors, "IVF256,Flat")
    with pytest.raises(ValueError, match="at least 256 passages.*Received: num_passages=100"):
        PassageIndex.from_embeddings(passages, vectors, "IVF4,PQ4")
    with pytest.raises(ValueError, match="Received: index_factory='Bogus'"):
        PassageIndex.from_embeddings(passages, vectors, "Bogus")


@pytest.mark.parametrize("factory", ["HNSW32", "IVF16,Flat", "IVF8,PQ8", "PQ8"])
def test_approximate_indexes_train_and_search(factory):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(600, 32)).astype("float32")
    passages = [{"id": str(i), "text": f"p{i}"} for i in range(600)]
    index = PassageIndex.from_embeddings(passages, vectors, factory)
    result = index.search(vectors[:20], k=5)
    # Each vector's nearest neighbour by inner product (on unit vectors) is itself.
    assert np.mean(result.rows[:, 0] == np.arange(20)) >= 0.9
    expected_parameters = {"HNSW32": {"efSearch": 64}, "IVF16,Flat": {"nprobe": 16}}
    expected_parameters["IVF8,PQ8"] = {"nprobe": 8}
    assert index.search_parameters == expected_parameters.get(factory, {})


def test_save_load_round_trip(tmp_path, tfidf, tfidf_index):
    directory = tmp_path / "kb"
    tfidf_index.save(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["count"] == len(tfidf_index) and manifest["dim"] == 64
    assert manifest["metric"] == "inner_product"
    assert manifest["encoder_identity"] == tfidf.identity
    assert set(manifest["files"]) == {
        "index", "passages", "embeddings",
        "encoder:tfidf_encoder.json", "encoder:tfidf_encoder.npz",
    }
    assert manifest["encoder"]["class_name"] == "TfidfEncoder"
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())

    for mmap in (False, True):
        loaded = PassageIndex.load(directory, encoder=tfidf, mmap=mmap)
        assert isinstance(loaded.embeddings, np.memmap) == mmap
        assert loaded.passages == tfidf_index.passages
        np.testing.assert_array_equal(loaded.embeddings, tfidf_index.embeddings)
        queries = ["What is the capital of Peru?", "Which currency is used in Chile?"]
        a, b = loaded.search(queries, k=5), tfidf_index.search(queries, k=5)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores)
    assert loaded.directory == str(directory.resolve())


def test_save_replaces_previous_version(tmp_path):
    directory = tmp_path / "kb"
    PassageIndex.from_embeddings(FEW, np.eye(3, 4)).save(directory)
    PassageIndex.from_embeddings(FEW[:2], np.eye(2, 4)).save(directory)
    assert len(PassageIndex.load(directory)) == 2
    assert sorted(p for p in os.listdir(directory) if p.startswith("data-")) == [
        json.loads((directory / "manifest.json").read_text())["data_folder"]
    ]


def test_mismatched_encoder_is_refused(tmp_path, countries, tfidf, tfidf_index):
    directory = tmp_path / "kb"
    tfidf_index.save(directory)
    texts = [p["text"] for p in countries[0][:200]]
    with pytest.raises(ValueError, match="Received: encoder.dim=32"):
        PassageIndex.load(directory, encoder=TfidfEncoder(dim=32).fit(texts))
    other = TfidfEncoder(dim=64, ngram_range=(1, 1)).fit(texts)
    with pytest.raises(ValueError, match="Received: encoder.identity="):
        PassageIndex.load(directory, encoder=other)


def _data_file(directory, name):
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / manifest["data_folder"] / name


def test_damaged_indexes_are_refused(tmp_path):
    index = PassageIndex.from_embeddings(FEW, np.eye(3, 4))
    directory = tmp_path / "kb"

    index.save(directory)
    path = _data_file(directory, "embeddings.npy")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        PassageIndex.load(directory)

    index.save(directory)
    path = _data_file(directory, "index.faiss")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        PassageIndex.load(directory)

    index.save(directory)
    os.remove(_data_file(directory, "passages.jsonl"))
    with pytest.raises(ValueError, match="Received: missing file="):
        PassageIndex.load(directory)

    index.save(directory)
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PassageIndex.load(directory)

    with pytest.raises(ValueError, match="Received: directory="):
        PassageIndex.load(tmp_path / "missing")


def test_damage_detected_by_faiss_without_checksums(tmp_path):
    directory = tmp_path / "kb"
    PassageIndex.from_embeddings(FEW, np.eye(3, 4)).save(directory)
    path = _data_file(directory, "index.faiss")
    data = bytearray(path.read_bytes())
    data[:4] = b"junk"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="FAISS cannot read the index file"):
        PassageIndex.load(directory, verify_checksums=False)


KILLED_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from keras_ragkd.retrieval import PassageIndex

    directory, count = sys.argv[1], int(sys.argv[2])
    vectors = np.random.default_rng(0).normal(size=(count, 64)).astype("float32")
    passages = [{"id": f"new-{i}", "text": f"passage {i}"} for i in range(count)]
    index = PassageIndex.from_embeddings(passages, vectors)
    while True:
        print("saving", flush=True)
        index.save(directory)
    """
)


@pytest.mark.slow
def test_sigkill_during_save_leaves_previous_index_loadable(tmp_path):
    directory = tmp_path / "kb"
    PassageIndex.from_embeddings(FEW, np.eye(3, 4)).save(directory)
    script = tmp_path / "saver.py"
    script.write_text(KILLED_SAVER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(directory), "30000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    loads = []
    for delay in (0.0, 0.02, 0.05, 0.1):
        # Loading while another process saves sees a complete version.
        assert process.stdout.readline().strip() == "saving"
        time.sleep(delay)
        loads.append(len(PassageIndex.load(directory)))
    # Kill while a later save is running: the directory then holds a complete
    # previous version and a partial new one.
    assert process.stdout.readline().strip() == "saving"
    time.sleep(0.03)
    process.send_signal(signal.SIGKILL)
    process.wait()
    loaded = PassageIndex.load(directory)  # the old or the new one, never broken
    assert len(loaded) in (3, 30000)
    assert set(loads) <= {3, 30000}
    # A save after the crash cleans up the leftovers of the interrupted one.
    PassageIndex.from_embeddings(FEW, np.eye(3, 4)).save(directory)
    leftovers = [p for p in os.listdir(directory) if p.startswith((".data-", "data-"))]
    assert len(leftovers) == 1


def test_concurrent_searches_match_serial_ones(tfidf, tfidf_index):
    queries = tfidf.encode([f"What is the capital of {c}?" for c in (
        "France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt", "India",
    )] * 8)
    expected = tfidf_index.search(queries, k=5).rows
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: tfidf_index.search(queries[i : i + 1], k=5).rows, range(64))
        )
    np.testing.assert_array_equal(np.concatenate(results), expected)


def test_searches_during_adds_see_consistent_versions():
    rng = np.random.default_rng(2)
    index = PassageIndex.from_embeddings(
        [{"id": f"p{i}", "text": "t"} for i in range(200)], rng.normal(size=(200, 16))
    )
    queries = rng.normal(size=(4, 16)).astype("float32")

    def search(_):
        rows, scores, mask, embeddings = index.search_arrays(queries, 10)
        # Scores and embeddings come from the same version of the index.
        np.testing.assert_allclose(
            scores, np.einsum("nd,nkd->nk", queries, embeddings) * mask, atol=1e-4
        )
        return rows

    def add(step):
        index.add(
            [{"id": f"new{step}-{i}", "text": "t"} for i in range(20)],
            embeddings=rng.normal(size=(20, 16)),
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        searches = [pool.submit(search, i) for i in range(60)]
        adds = [pool.submit(add, step) for step in range(10)]
        for future in searches + adds:
            future.result()
    assert len(index) == 400
    assert len({p.id for p in index.passages}) == 400


def test_tf_data_parallel_map_searches(tfidf, tfidf_index):
    questions = [f"Which currency is used in {c}?" for c in ("Japan", "Peru", "India")] * 10
    vectors = tfidf.encode(questions)

    def search(vector):
        rows = tf.py_function(
            lambda v: tfidf_index.search_arrays(v.numpy()[None], 3)[0][0],
            [vector],
            tf.int64,
        )
        rows.set_shape([3])
        return rows

    dataset = tf.data.Dataset.from_tensor_slices(vectors).map(
        search, num_parallel_calls=4, deterministic=True
    )
    rows = np.stack([r.numpy() for r in dataset])
    np.testing.assert_array_equal(rows, tfidf_index.search(vectors, k=3).rows)
