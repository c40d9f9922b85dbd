"""The `keras-ragkd` command on a tiny corpus of its own, end to end.

Commands run in-process through `cli.main` (one through the real console
script); TF-IDF indexes keep them fast. Six invented countries, so no model
can know the facts without reading the passages.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import pytest

from keras_ragkd import cli

COUNTRIES = [
    ("Zubrowka", "Lutz", "krone"),
    ("Freedonia", "Fredville", "florin"),
    ("Genovia", "Pyrus", "genovian euro"),
    ("Latveria", "Doomstadt", "latverian franc"),
    ("Elbonia", "Mudville", "grubnick"),
    ("Sokovia", "Novi Grad", "sokovian mark"),
]
PASSAGES = [
    record
    for country, capital, currency in COUNTRIES
    for record in (
        {"id": f"{country.lower()}/capital", "title": country,
         "text": f"The capital of {country} is {capital}."},
        {"id": f"{country.lower()}/currency", "title": country,
         "text": f"The currency of {country} is the {currency}."},
    )
]
QA = [
    pair
    for country, capital, currency in COUNTRIES
    for pair in (
        {"question": f"What is the capital of {country}?", "answer": capital},
        {"question": f"Which currency is used in {country}?", "answer": currency},
    )
]
# Lines TensorFlow's C++ runtime prints to stderr at import, before any code
# of ours runs (not silenced by TF_CPP_MIN_LOG_LEVEL in TF 2.21).
TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)"
)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    """`(exit status, stdout JSON lines, stderr lines)` of one in-process command."""
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return status, lines, captured.err.splitlines()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return {
        "folder": folder,
        "corpus": write_jsonl(folder / "corpus.jsonl", PASSAGES),
        "qa": write_jsonl(folder / "qa.jsonl", QA),
    }


@pytest.fixture(scope="module")
def kb(files):
    out = files["folder"] / "kb"
    assert cli.main(["index", "build", "--corpus", files["corpus"], "--out", str(out),
                     "--encoder", "tfidf"]) == 0
    return out


def test_index_build_info_and_query(kb, capsys):
    status, (info,), _ = run(capsys, "index", "info", kb)
    assert status == 0
    assert info["count"] == 12 and info["index_factory"] == "Flat"
    assert info["encoder"]["class_name"] == "TfidfEncoder" and info["encoder"]["restorable"]
    assert info["encoder"]["identity"].startswith(f"tfidf-svd/{info['dim']}/")
    assert info["checksums"] == "ok"
    assert {"index.faiss", "passages.jsonl", "embeddings.npy", "tfidf_encoder.json",
            "tfidf_encoder.npz"} == set(info["files"])

    status, lines, _ = run(capsys, "index", "query", kb, "capital of Genovia",
                           "Which currency is used in Elbonia?", "-k", "2")
    assert status == 0 and [line["query"] for line in lines] == [
        "capital of Genovia", "Which currency is used in Elbonia?"]
    assert lines[0]["hits"][0] == {"id": "genovia/capital", "score": lines[0]["hits"][0]["score"],
                                   "title": "Genovia", "text": "The capital of Genovia is Pyrus."}
    assert lines[1]["hits"][0]["id"] == "elbonia/currency" and len(lines[1]["hits"]) == 2
    _, (everything,), _ = run(capsys, "index", "query", kb, "Lutz", "-k", "50")
    assert len(everything["hits"]) == 12


def test_index_build_from_csv_with_overwrite_and_hnsw(files, capsys):
    corpus = files["folder"] / "corpus.csv"
    corpus.write_text("id,text\n" + "".join(
        f'{p["id"]},"{p["title"]}: {p["text"]}"\n' for p in PASSAGES))
    out = files["folder"] / "kb_csv"
    assert run(capsys, "index", "build", "--corpus", corpus, "--out", out,
               "--encoder", "tfidf", "--dim", "6")[0] == 0
    status, (info,), _ = run(capsys, "index", "build", "--corpus", corpus, "--out", out,
                             "--encoder", "tfidf", "--factory", "HNSW32", "--overwrite")
    assert status == 0 and info["index_factory"] == "HNSW32" and 6 < info["dim"] <= 12
    assert not [name for name in os.listdir(files["folder"]) if name.startswith(".")]
    _, (line,), _ = run(capsys, "index", "query", out, "currency of Sokovia", "-k", "1")
    assert line["hits"][0]["id"] == "sokovia/currency" and line["hits"][0]["title"] == ""


def test_index_info_reports_a_damaged_index(files, kb, capsys):
    damaged = files["folder"] / "damaged"
    shutil.copytree(kb, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    path = damaged / manifest["data_folder"] / "tfidf_encoder.npz"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    status, (info,), err = run(capsys, "index", "info", damaged)
    assert status == 1 and info["checksums"] == "damaged"
    assert info["files"]["tfidf_encoder.npz"]["state"] == "checksum mismatch"
    assert err == [f"keras-ragkd index info: error: the index {damaged} is damaged. "
                   "Received: tfidf_encoder.npz (checksum mismatch)"]
    status, _, err = run(capsys, "index", "query", damaged, "capital of Genovia")
    assert status == 2 and len(err) == 1 and "corrupted" in err[0]


@pytest.mark.slow
def test_minilm_indexes_and_the_legacy_aliases(files, tmp_path, capsys):
    status, (info,), err = run(capsys, "index", "build", "--corpus", files["corpus"], "--out",
                               tmp_path / "kb", "--sequence-length", "24", "--batch-size", "4")
    assert status == 0 and info["encoder"]["class_name"] == "MiniLMEncoder"
    assert info["encoder"]["config"] == {"sequence_length": 24, "preset": None}
    assert info["dim"] == 384 and info["checksums"] == "ok"
    assert any("12/12" in line for line in err)  # The encoder's progress bar.
    status, (line,), _ = run(capsys, "index", "query", tmp_path / "kb",
                             "Which money do they use in Latveria?", "-k", "1")
    assert status == 0 and line["hits"][0]["id"] == "latveria/currency"

    # `build-index` / `search`: the embedded countryinfo knowledge base.
    status, (info,), _ = run(capsys, "build-index", tmp_path / "countries", "--countries",
                             "France", "Japan", "--verbose", "0")
    assert status == 0 and info["encoder"]["config"]["sequence_length"] == 64
    status, (line,), _ = run(capsys, "search", tmp_path / "countries",
                             "What is the capital of Japan?", "-k", "2")
    assert status == 0 and line["hits"][0]["id"] == "japan/capital"
    assert "Tokyo" in line["hits"][0]["text"] and len(line["hits"]) == 2


def assert_bad_input(capsys, argv, message, watched=()):
    """Exit status 2, one stderr line with `message`, nothing on stdout or disk."""
    watched = [path for path in watched if path.exists()]
    before = {path: sorted(os.listdir(path)) for path in watched}
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == []
    assert len(err) == 1, err
    assert err[0].startswith("keras-ragkd ") and ": error: " in err[0]
    assert message in err[0]
    assert {path: sorted(os.listdir(path)) for path in watched} == before


@pytest.mark.slow
def test_train_distill_evaluate_ask_export(files, kb, capsys):
    """The whole command line on one model pair (built once, also under xdist)."""
    folder = files["folder"]
    teacher, student = folder / "teacher", folder / "student"
    status, (trained,), _ = run(capsys, "train", "--index", kb, "--data", files["qa"], "--out",
                                teacher, "--generator", "tiny", "--epochs", "2", "--num-docs", "3")
    assert status == 0 and trained["model"] == str(teacher) and trained["epochs"] == 2
    status, (distilled,), err = run(capsys, "distill", "--teacher", teacher, "--data",
                                    files["qa"], "--out", student, "--student", "tiny",
                                    "--num-docs", "2", "--seconds", "1")
    assert status == 0 and distilled["num_docs"] == 2 and "distillation_loss" in distilled
    assert any("student_loss" in line for line in err)  # The Keras progress bar.
    for model in (teacher, student):
        assert {"config.json", "model.weights.h5", "index"} <= set(os.listdir(model))
    assert not [name for name in os.listdir(folder) if name.startswith(".")]  # No leftovers.

    status, (scores,), err = run(capsys, "evaluate", student, files["qa"])
    assert status == 0 and scores["count"] == 12
    assert 0.0 <= scores["exact_match"] <= scores["token_f1"] <= 1.0
    assert scores["index"] == str(student / "index")
    assert any("question" in line for line in err)

    question = "What is the capital of Zubrowka?"
    status, (answer,), _ = run(capsys, "ask", student, question, "--show-passages")
    assert status == 0 and answer["question"] == question
    assert isinstance(answer["answer"], str) and len(answer["passages"]) == 2
    assert answer["passages"][0] == {
        "id": "zubrowka/capital", "title": "Zubrowka",
        "text": "The capital of Zubrowka is Lutz.",
        "probability": answer["passages"][0]["probability"],
    }

    exported = folder / "exported"
    status, (export,), _ = run(capsys, "export", student, exported)
    assert status == 0 and export["saved_model"] == str(exported)
    assert os.path.isfile(exported / "saved_model.pb")
    status, (served,), _ = run(capsys, "ask", exported, question, "--show-passages")
    assert status == 0 and served["answer"] == answer["answer"]
    assert [p["id"] for p in served["passages"]] == [p["id"] for p in answer["passages"]]

    # The knowledge base changes, the model follows (same encoder, no retraining).
    swapped = [dict(p, text="The capital of Zubrowka is Fredville.")
               if p["id"] == "zubrowka/capital" else p for p in PASSAGES]
    corpus = write_jsonl(folder / "swapped.jsonl", swapped)
    assert run(capsys, "index", "build", "--corpus", corpus, "--out", folder / "kb_swapped",
               "--encoder-from", kb)[0] == 0
    status, (answer,), _ = run(capsys, "ask", student, question, "--show-passages",
                               "--index", folder / "kb_swapped")
    assert status == 0
    assert answer["passages"][0]["text"] == "The capital of Zubrowka is Fredville."

    # An index made with another encoder (another TF-IDF fit) is refused.
    other = folder / "kb_other"
    assert run(capsys, "index", "build", "--corpus", files["corpus"], "--out", other,
               "--encoder", "tfidf", "--dim", "5")[0] == 0
    watched = (folder, student, exported)
    assert_bad_input(capsys, ["ask", student, question, "--index", other],
                     f"--index {other}: The index was built with another encoder than "
                     "the model's query encoder", watched)
    assert_bad_input(capsys, ["evaluate", student, files["qa"], "--index", other],
                     "Received: index.encoder_identity='tfidf-svd/5/", watched)
    assert_bad_input(capsys, ["export", student, folder / "exported_other", "--index", other],
                     "The index was built with another encoder", watched)
    # An approximate index exports only with --exact-retrieval (exported search is exact).
    assert run(capsys, "index", "build", "--corpus", files["corpus"], "--out",
               folder / "kb_hnsw", "--encoder-from", kb, "--factory", "HNSW32")[0] == 0
    assert_bad_input(capsys, ["export", student, folder / "exported_hnsw", "--index",
                              folder / "kb_hnsw"], "approximate FAISS factory 'HNSW32'", watched)


def _bad_inputs(folder, kb, existing):
    """`(file to write, argv, expected message)` for every kind of bad input
    that needs no trained model (those are in the end-to-end test).

    `existing` is a folder that exists (outputs are checked before inputs are
    read, so it need not be a model).
    """
    corpus = folder / "bad_corpus.jsonl"
    qa = folder / "bad_qa.jsonl"
    out = folder / "new_out"
    build = ["index", "build", "--out", out, "--encoder", "tfidf", "--corpus"]
    train = ["train", "--index", kb, "--out", out, "--generator", "tiny", "--data"]
    two_passages = json.dumps(PASSAGES[0]) + "\n" + json.dumps(PASSAGES[1]) + "\n"
    return {
        "missing corpus": (None, build + [folder / "nope.jsonl"],
                           f"{folder / 'nope.jsonl'}: No such file"),
        "missing QA file": (None, train + [folder / "nope.csv"],
                            f"{folder / 'nope.csv'}: No such file"),
        "malformed JSON line": ((corpus, json.dumps(PASSAGES[0]) + '\n{"id": "x", \n'),
                                build + [corpus], f"{corpus}:2: Malformed JSON"),
        "missing field": ((qa, json.dumps(QA[0]) + '\n{"question": "Why?"}\n'), train + [qa],
                          f"{qa}:2: Missing field 'answer'"),
        "missing CSV column": ((folder / "bad.csv", "question,reply\nWhy?,Because\n"),
                               train + [folder / "bad.csv"],
                               f"{folder / 'bad.csv'}:1: Expected a CSV header"),
        "non-string field": ((corpus, '{"id": 12, "text": "Twelve."}\n'), build + [corpus],
                             f"{corpus}:1: Field 'id' must be a string. Received: id=12"),
        "empty corpus": ((corpus, "\n"), build + [corpus],
                         f"{corpus}: Expected at least one passage"),
        "duplicate ids": ((corpus, two_passages + json.dumps(PASSAGES[0]) + "\n"),
                          build + [corpus],
                          f"{corpus}:3: Passage ids must be unique (this id is already on line 1)"),
        "unknown factory": ((corpus, two_passages), build + [corpus, "--factory", "Bogus99"],
                            "--factory: Expected a `faiss.index_factory` string"),
        "factory needing more passages": ((corpus, two_passages),
                                          build + [corpus, "--factory", "IVF64,Flat"],
                                          "at least 64 passages"),
        "not an index": (None, ["train", "--index", folder, "--data", folder / "qa.jsonl",
                                "--out", out], "Expected a folder written by `PassageIndex.save`"),
        "not a model": (None, ["evaluate", kb, folder / "qa.jsonl"], f"model {kb}"),
        "index build output exists": (
            None, ["index", "build", "--corpus", folder / "corpus.jsonl", "--out", existing],
            f"{existing} already exists; pass --overwrite"),
        "train output exists": (None, ["train", "--index", kb, "--data", folder / "qa.jsonl",
                                       "--out", existing],
                                f"{existing} already exists; pass --overwrite"),
        "distill output exists": (None, ["distill", "--teacher", kb, "--data",
                                         folder / "qa.jsonl", "--out", existing],
                                  f"{existing} already exists"),
        "export output exists": (None, ["export", kb, existing], f"{existing} already exists"),
        "output is an input": (None, ["train", "--index", kb, "--data", folder / "qa.jsonl",
                                      "--out", kb, "--overwrite"],
                               "--out must not be the --index folder it reads"),
    }


BAD_INPUTS = list(_bad_inputs(*[pathlib.Path("/")] * 3))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, files, kb, capsys):
    folder = files["folder"]
    existing = folder / "existing"
    existing.mkdir(exist_ok=True)
    (existing / "keep.txt").write_text("mine")
    content, argv, message = _bad_inputs(folder, kb, existing)[case]
    if content is not None:
        content[0].write_text(content[1], encoding="utf-8")
    assert_bad_input(capsys, argv, message, watched=(folder, kb, existing))
    assert (existing / "keep.txt").read_text() == "mine"


def test_argument_errors_exit_2(capsys):
    for argv in (["index", "build", "--out", "x"], ["train", "--epochs", "1", "--seconds", "2"],
                 ["index", "query"], ["nonsense"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2


@pytest.mark.parametrize(
    "command", [[], ["index"], ["index", "build"], ["index", "info"], ["index", "query"],
                ["train"], ["distill"], ["evaluate"], ["ask"], ["export"]],
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(command + ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: keras-ragkd" in text and "example" in text


def test_demo_gets_its_arguments(monkeypatch):
    received = []
    demo = types.ModuleType("keras_ragkd.demo")
    demo.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, "keras_ragkd.demo", demo)
    assert cli.main(["demo", "--seconds", "5", "--help"]) == 0
    assert received == [["--seconds", "5", "--help"]]


@pytest.mark.slow
def test_console_script_reports_bad_input_in_one_line(files, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "keras-ragkd")
    missing = tmp_path / "missing.jsonl"
    result = subprocess.run(
        [script, "index", "build", "--corpus", str(missing), "--out", str(tmp_path / "kb")],
        capture_output=True, text=True, timeout=120,
    )
    ours = [line for line in result.stderr.splitlines() if not TF_NOISE.match(line)]
    assert result.returncode == 2 and result.stdout == ""
    assert ours == [
        f"keras-ragkd index build: error: {missing}: No such file. Received: file='{missing}'"
    ]
    assert os.listdir(tmp_path) == []
