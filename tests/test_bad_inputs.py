"""Bad input across the public API and the `keras-ragkd` command.

`CASES` is the one table: each row is a call with a bad input, the error it
must raise and a fixed part of its message. Every row is a test that checks
the error class, that the message ends with the project's `Received: ...`
and that nothing was written (a listing of every file and folder the calls
can reach, with sizes and mtimes, is the same before and after).
`docs/bad_inputs.md` is generated from the table (`python
tests/test_bad_inputs.py > docs/bad_inputs.md`) and a test checks that it is
current. Rows marked `xfail` get a bad error today (a raw TensorFlow or
scikit-learn error, a silent NaN, ...) in a module owned elsewhere; their
`reason` says what the fix is.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd import cli
from keras_ragkd.data import country_passages
from keras_ragkd.data import country_split
from keras_ragkd.data import read_corpus
from keras_ragkd.data import read_qa_pairs
from keras_ragkd.distillation import Distiller
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.distillation import kd_divergence
from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag import RagTokenLoss
from keras_ragkd.rag import build_generator
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import check_index_factory
from keras_ragkd.retrieval import use_backend

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "bad_inputs.md")
TEXTS = [p["text"] for p in country_passages(["France", "Japan", "Peru", "Kenya"])]


class CommandError(Exception):
    """A `keras-ragkd` run that exited non-zero: its status and last stderr line."""

    def __init__(self, status, line):
        super().__init__(line)
        self.status = status


def command(*argv):
    """Runs `keras-ragkd ARGV` in this process; raises `CommandError` unless it exits 0."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main([str(a) for a in argv])
    if status:
        lines = stderr.getvalue().strip().splitlines()
        raise CommandError(status, lines[-1] if lines else "")
    return stdout.getvalue()


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: `call` (shown in the doc) runs as `run(ws)`."""

    id: str
    call: str
    run: object
    error: type
    message: str
    xfail: str = None

    @property
    def error_name(self):
        return "exit status 2" if self.error is CommandError else self.error.__name__


def _vectors(n=8, dim=4):
    return np.random.default_rng(0).normal(size=(n, dim)).astype("float32")


PASSAGES = [{"id": f"p{i}", "text": f"passage {i}"} for i in range(8)]
NAN_ROW = np.where(np.arange(4) == 0, np.nan, 1.0)[None].repeat(8, 0)


CASES = [
    # --- PassageIndex: embeddings and queries ---
    Case("nan-embeddings", "PassageIndex.from_embeddings(passages, embeddings with NaN)",
         lambda ws: PassageIndex.from_embeddings(PASSAGES, NAN_ROW),
         ValueError, "`embeddings` must be finite"),
    Case("inf-embeddings", "PassageIndex.from_embeddings(passages, embeddings with inf)",
         lambda ws: PassageIndex.from_embeddings(PASSAGES, np.full((8, 4), np.inf)),
         ValueError, "`embeddings` must be finite"),
    Case("1d-embeddings", "PassageIndex.from_embeddings(passages, np.ones(8))",
         lambda ws: PassageIndex.from_embeddings(PASSAGES, np.ones(8)),
         ValueError, "non-empty 2-D array (n, d)"),
    Case("string-embeddings", "PassageIndex.from_embeddings(passages, array of str)",
         lambda ws: PassageIndex.from_embeddings(PASSAGES, _vectors().astype(str)),
         TypeError, "to be a float array"),
    Case("count-mismatch", "PassageIndex.from_embeddings(5 passages, 8 embeddings)",
         lambda ws: PassageIndex.from_embeddings(PASSAGES[:5], _vectors()),
         ValueError, "one embedding per passage"),
    Case("empty-corpus", "PassageIndex.from_embeddings([], np.zeros((0, 4)))",
         lambda ws: PassageIndex.from_embeddings([], np.zeros((0, 4))),
         ValueError, "the corpus is empty"),
    Case("duplicate-ids", "PassageIndex.from_embeddings(passages with one id twice, ...)",
         lambda ws: PassageIndex.from_embeddings([PASSAGES[0]] * 8, _vectors()),
         ValueError, "ids must be unique"),
    Case("k-zero", "index.search_arrays(queries, k=0)",
         lambda ws: ws.index.search_arrays(_vectors(1), k=0),
         ValueError, "`k` must be a positive integer"),
    Case("k-float", "index.search_arrays(queries, k=1.5)",
         lambda ws: ws.index.search_arrays(_vectors(1), k=1.5),
         ValueError, "`k` must be a positive integer"),
    Case("k-huge", "index.search_arrays(queries, k=10**12)",
         lambda ws: ws.index.search_arrays(_vectors(1), k=10**12),
         ValueError, "`k` must be at most 65536"),
    Case("nan-query", "index.search_arrays(vectors with NaN, k=2)",
         lambda ws: ws.index.search_arrays(NAN_ROW[:1], k=2),
         ValueError, "`queries` must be finite"),
    Case("query-dimension", "index.search_arrays(np.ones((1, 5)), k=2) on a 4-d index",
         lambda ws: ws.index.search_arrays(np.ones((1, 5)), k=2),
         ValueError, "of dimension 4"),
    Case("string-query-no-encoder", 'index.search(["capital of Peru"], k=2), index without encoder',
         lambda ws: ws.index.search(["capital of Peru"], k=2),
         ValueError, "needs an encoder"),
    Case("empty-query-string", 'tfidf_index.search([""], k=2)',
         lambda ws: ws.tfidf_index.search([""], k=2),
         ValueError, "A query must not be empty or blank"),
    Case("non-utf8-query", 'tfidf_index.search([b"\\xff\\xfe"], k=2)',
         lambda ws: ws.tfidf_index.search([b"\xff\xfe"], k=2),
         TypeError, "or a list of strings for queries"),
    # --- FAISS factory strings, encoders, retriever ---
    Case("unknown-factory", 'check_index_factory("NoSuchIndex", dim=4, num_passages=8)',
         lambda ws: check_index_factory("NoSuchIndex", 4, 8),
         ValueError, "Expected a `faiss.index_factory` string"),
    Case("factory-needs-training", 'check_index_factory("IVF256,Flat", dim=4, num_passages=8)',
         lambda ws: check_index_factory("IVF256,Flat", 4, 8),
         ValueError, "must be trained on at least 256 passages"),
    Case("factory-pq-dimension", 'check_index_factory("PQ3", dim=4, num_passages=8)',
         lambda ws: check_index_factory("PQ3", 4, 8),
         ValueError, "Expected a `faiss.index_factory` string"),
    Case("tfidf-dim-zero", "TfidfEncoder(dim=0)",
         lambda ws: TfidfEncoder(dim=0),
         ValueError, "`dim` must be a positive integer"),
    Case("tfidf-empty-strings", 'TfidfEncoder(dim=2).fit(["", " "])',
         lambda ws: TfidfEncoder(dim=2).fit(["", " "]),
         ValueError, "these are all empty or punctuation"),
    Case("tfidf-bytes", 'TfidfEncoder(dim=2).fit([b"\\xff\\xfe", b"abc"])',
         lambda ws: TfidfEncoder(dim=2).fit([b"\xff\xfe", b"abc"]),
         TypeError, "must be a Python string"),
    Case("mismatched-encoder",
         "PassageIndex.load(tfidf_kb, encoder=TfidfEncoder fitted on other texts)",
         lambda ws: PassageIndex.load(ws.tfidf_kb, encoder=ws.other_tfidf),
         ValueError, "The encoder differs from the one the index was built with"),
    Case("retriever-k-zero", "PassageRetriever(index, k=0)",
         lambda ws: PassageRetriever(ws.index, k=0),
         ValueError, "`k` must be a positive integer"),
    Case("unknown-retrieval-backend", 'PassageRetriever(index, k=2, backend="gpu")',
         lambda ws: PassageRetriever(ws.index, k=2, backend="gpu"),
         ValueError, "`backend` must be one of"),
    Case("unknown-use-backend", 'use_backend(model, "nope")',
         lambda ws: use_backend(None, "nope"),
         ValueError, "`backend` must be one of"),
    Case("unknown-generator", 'build_generator("huge", vocabulary_size=10)',
         lambda ws: build_generator("huge", 10),
         ValueError, "`generator` must be one of"),
    Case("rag-index-without-encoder", "build_rag_question_answerer(index built from embeddings)",
         lambda ws: build_rag_question_answerer(ws.index, generator="tiny"),
         ValueError, "a `query_encoder` is needed"),
    Case("rag-negative-lexical-weight",
         'build_rag_question_answerer(tfidf_index, generator="tiny", lexical_weight=-1)',
         lambda ws: build_rag_question_answerer(ws.tfidf_index, generator="tiny",
                                                lexical_weight=-1),
         ValueError, "`lexical_weight` must be a finite number"),
    Case("rag-hybrid-trained-encoder",
         "build_rag_question_answerer(tfidf_index, lexical_weight=0.5, train_query_encoder=True)",
         lambda ws: build_rag_question_answerer(ws.tfidf_index, generator="tiny",
                                                lexical_weight=0.5, train_query_encoder=True),
         ValueError, "hybrid retrieval does not support"),
    Case("label-smoothing-nan", 'RagTokenLoss(label_smoothing=float("nan"))',
         lambda ws: RagTokenLoss(label_smoothing=float("nan")),
         ValueError, "`label_smoothing` must be a float in [0, 1)"),
    # --- Distillation ---
    Case("alpha-nan", 'Distiller(teacher, student, alpha=float("nan"))',
         lambda ws: Distiller(ws.teacher, ws.student, alpha=float("nan")),
         ValueError, "`alpha`"),
    Case("temperature-zero", "Distiller(teacher, student, temperature=0)",
         lambda ws: Distiller(ws.teacher, ws.student, temperature=0),
         ValueError, "`temperature` must be a finite number > 0"),
    Case("temperature-inf", 'Distiller(teacher, student, temperature=float("inf"))',
         lambda ws: Distiller(ws.teacher, ws.student, temperature=float("inf")),
         ValueError, "`temperature` must be a finite number > 0"),
    Case("mismatched-vocabulary", "Distiller(teacher with 5 logits, student with 4)",
         lambda ws: Distiller(ws.teacher, ws.narrow_student),
         ValueError, "vocabulary"),
    Case("kd-temperature-zero", "kd_divergence(teacher_logits, student_logits, temperature=0)",
         lambda ws: kd_divergence(np.ones((1, 3)), np.zeros((1, 3)), 0.0),
         ValueError, "`temperature` must be a finite number > 0"),
    Case("kd-mismatched-vocabulary", "kd_divergence(logits (1, 3), logits (1, 4), 1.0)",
         lambda ws: kd_divergence(np.ones((1, 3)), np.zeros((1, 4)), 1.0),
         ValueError, "same vocabulary"),
    Case("cache-other-dataset", "TeacherCache.load(cache).attach(another dataset)",
         lambda ws: TeacherCache.load(ws.cache_dir).attach(ws.other_dataset),
         ValueError, "does not match this TeacherCache"),
    Case("truncated-cache", "TeacherCache.load(cache with teacher_logits.npy cut short)",
         lambda ws: TeacherCache.load(ws.truncated_cache),
         ValueError, "truncated or overwritten"),
    Case("cache-file-outside", 'TeacherCache.load(cache whose metadata names "../x.npy")',
         lambda ws: TeacherCache.load(ws.outside_cache),
         ValueError, "The TeacherCache metadata is malformed"),
    # --- Saved artifacts ---
    Case("index-manifest-outside", 'PassageIndex.load(kb whose manifest names "../outside.npy")',
         lambda ws: PassageIndex.load(ws.outside_kb),
         ValueError, "naming files of its data folder"),
    Case("truncated-index", "PassageIndex.load(kb with embeddings.npy cut short)",
         lambda ws: PassageIndex.load(ws.truncated_kb),
         ValueError, "An index file is truncated or overwritten"),
    Case("corrupted-index", "PassageIndex.load(kb with one byte of index.faiss flipped)",
         lambda ws: PassageIndex.load(ws.corrupted_kb),
         ValueError, "An index file is corrupted (SHA-256 mismatch)"),
    Case("index-from-keras-file", "PassageIndex.load(model.keras)",
         lambda ws: PassageIndex.load(ws.keras_file),
         ValueError, "Expected a folder written by `PassageIndex.save`"),
    Case("model-from-keras-file", "RagQuestionAnswerer.from_preset(a Sequential's .keras file)",
         lambda ws: RagQuestionAnswerer.from_preset(ws.keras_file),
         ValueError, "is not a readable model folder config"),
    Case("model-from-index-folder", "RagQuestionAnswerer.from_preset(an index folder)",
         lambda ws: RagQuestionAnswerer.from_preset(ws.kb),
         ValueError, "is not a readable model folder config"),
    # --- Data files and the embedded data ---
    Case("non-utf8-corpus", "read_corpus(JSON Lines file with bytes FF FE)",
         lambda ws: read_corpus(ws.path("non_utf8.jsonl")),
         ValueError, "Expected UTF-8 text"),
    Case("empty-corpus-file", "read_corpus(empty .jsonl file)",
         lambda ws: read_corpus(ws.path("empty.jsonl")),
         ValueError, "Expected at least one passage"),
    Case("empty-passage-text", 'read_corpus(file with {"id": "a", "text": ""})',
         lambda ws: read_corpus(ws.path("empty_text.jsonl")),
         ValueError, "must not be empty"),
    Case("missing-answer", 'read_qa_pairs(file with {"question": "..."} only)',
         lambda ws: read_qa_pairs(ws.path("no_answer.jsonl")),
         ValueError, "Missing field 'answer'"),
    Case("corpus-extension", "read_corpus(passages.txt)",
         lambda ws: read_corpus(ws.path("passages.txt")),
         ValueError, "Expected a JSON Lines (.jsonl, .ndjson) or CSV (.csv) file"),
    Case("unknown-country", 'country_passages(["Atlantis"])',
         lambda ws: country_passages(["Atlantis"]),
         ValueError, "Unknown country names"),
    Case("split-fraction-string", 'country_split("test")',
         lambda ws: country_split("test"),
         ValueError, "`test_fraction` must be a finite number in (0, 1)"),
    # --- The command line (in this process; exit status 2, one line on stderr) ---
    Case("cli-non-utf8-corpus",
         "keras-ragkd index build --corpus non_utf8.jsonl --out OUT --encoder tfidf",
         lambda ws: command("index", "build", "--corpus", ws.path("non_utf8.jsonl"),
                            "--out", ws.out, "--encoder", "tfidf"),
         CommandError, "Expected UTF-8 text"),
    Case("cli-unknown-factory",
         "keras-ragkd index build --corpus corpus.jsonl --out OUT --encoder tfidf --dim 4 "
         "--factory NoSuchIndex",
         lambda ws: command("index", "build", "--corpus", ws.path("corpus.jsonl"), "--out",
                            ws.out, "--encoder", "tfidf", "--dim", 4, "--factory", "NoSuchIndex"),
         CommandError, "Expected a `faiss.index_factory` string"),
    Case("cli-dim-zero",
         "keras-ragkd index build --corpus corpus.jsonl --out OUT --encoder tfidf --dim 0",
         lambda ws: command("index", "build", "--corpus", ws.path("corpus.jsonl"), "--out",
                            ws.out, "--encoder", "tfidf", "--dim", 0),
         CommandError, "--dim must be positive"),
    Case("cli-out-is-a-file",
         "keras-ragkd index build --corpus corpus.jsonl --out corpus.jsonl --overwrite",
         lambda ws: command("index", "build", "--corpus", ws.path("corpus.jsonl"), "--out",
                            ws.path("corpus.jsonl"), "--overwrite", "--encoder", "tfidf"),
         CommandError, "is a file, not a folder"),
    Case("cli-k-zero", 'keras-ragkd index query TFIDF_KB "capital" -k 0',
         lambda ws: command("index", "query", ws.tfidf_kb, "capital", "-k", 0),
         CommandError, "-k must be positive"),
    Case("cli-k-huge", 'keras-ragkd index query TFIDF_KB "capital" -k 1000000000000',
         lambda ws: command("index", "query", ws.tfidf_kb, "capital", "-k", 10**12),
         CommandError, "-k: `k` must be at most 65536"),
    Case("cli-empty-query", 'keras-ragkd index query TFIDF_KB ""',
         lambda ws: command("index", "query", ws.tfidf_kb, ""),
         CommandError, "A query must not be empty"),
    Case("cli-index-manifest-outside", "keras-ragkd index info KB_WITH_../_IN_MANIFEST",
         lambda ws: command("index", "info", ws.outside_kb),
         CommandError, "naming files of its data folder"),
    Case("cli-index-without-encoder", 'keras-ragkd index query VECTOR_KB "capital"',
         lambda ws: command("index", "query", ws.kb, "capital"),
         CommandError, "records no encoder"),
    Case("cli-unknown-generator",
         "keras-ragkd train --index TFIDF_KB --data qa.jsonl --out OUT --generator huge",
         lambda ws: command("train", "--index", ws.tfidf_kb, "--data", ws.path("qa.jsonl"),
                            "--out", ws.out, "--generator", "huge"),
         CommandError, "Expected a generator size"),
    Case("cli-epochs-zero",
         "keras-ragkd train --index TFIDF_KB --data qa.jsonl --out OUT --epochs 0",
         lambda ws: command("train", "--index", ws.tfidf_kb, "--data", ws.path("qa.jsonl"),
                            "--out", ws.out, "--epochs", 0),
         CommandError, "--epochs must be positive"),
    Case("cli-alpha-nan",
         "keras-ragkd distill --teacher MODEL --data qa.jsonl --out OUT --alpha nan",
         lambda ws: command("distill", "--teacher", ws.kb, "--data", ws.path("qa.jsonl"),
                            "--out", ws.out, "--alpha", "nan"),
         CommandError, "--alpha must be in [0, 1]"),
    Case("cli-temperature-zero",
         "keras-ragkd distill --teacher MODEL --data qa.jsonl --out OUT --temperature 0",
         lambda ws: command("distill", "--teacher", ws.kb, "--data", ws.path("qa.jsonl"),
                            "--out", ws.out, "--temperature", 0),
         CommandError, "--temperature must be positive"),
    Case("cli-teacher-is-index", "keras-ragkd distill --teacher KB --data qa.jsonl --out OUT",
         lambda ws: command("distill", "--teacher", ws.kb, "--data", ws.path("qa.jsonl"),
                            "--out", ws.out),
         CommandError, "is not a readable model folder config"),
    Case("cli-empty-question", 'keras-ragkd ask MODEL ""',
         lambda ws: command("ask", ws.kb, ""),
         CommandError, "A question must not be empty"),
    Case("cli-ask-keras-file", 'keras-ragkd ask model.keras "capital of Peru?"',
         lambda ws: command("ask", ws.keras_file, "capital of Peru?"),
         CommandError, "No such model folder"),
    Case("cli-evaluate-missing-answer", "keras-ragkd evaluate MODEL no_answer.jsonl",
         lambda ws: command("evaluate", ws.kb, ws.path("no_answer.jsonl")),
         CommandError, "Missing field 'answer'"),
    Case("cli-export-onto-input", "keras-ragkd export MODEL MODEL --overwrite",
         lambda ws: command("export", ws.kb, ws.kb, "--overwrite"),
         CommandError, "must not be the MODEL_DIR folder it reads"),
]


# --- The artifacts the cases read (built once) ---

BAD_FILES = {
    "non_utf8.jsonl": b'{"id": "a", "text": "\xff\xfe"}\n',
    "empty.jsonl": b"",
    "empty_text.jsonl": b'{"id": "a", "text": ""}\n',
    "no_answer.jsonl": b'{"question": "What is the capital of Peru?"}\n',
    "passages.txt": b"Lima is the capital of Peru.\n",
    "qa.jsonl": b'{"question": "What is the capital of Peru?", "answer": "Lima"}\n',
    "corpus.jsonl": "".join(
        json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)
    ).encode(),
}


def _data_file(kb, name):
    (data,) = [d for d in os.listdir(kb) if d.startswith("data-")]
    return os.path.join(kb, data, name)


def _edit_json(path, edit):
    with open(path) as f:
        content = json.load(f)
    edit(content)
    with open(path, "w") as f:
        json.dump(content, f)


def _copy(source, destination, damage):
    shutil.copytree(source, destination)
    damage(destination)
    return destination


def _truncate(path, cut=4):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:-cut])


def _flip_a_byte(path):
    with open(path, "rb") as f:
        content = bytearray(f.read())
    content[len(content) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(content))


def _logits_model(width):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(width)])


def _dataset(seed):
    x = np.random.default_rng(seed).random((16, 3), dtype="float32")
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(16, "int32"))).batch(8)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad_inputs"))
    ws = types.SimpleNamespace(root=root, files=os.path.join(root, "files"))
    ws.path = lambda name: os.path.join(ws.files, name)
    os.makedirs(ws.files)
    for name, content in BAD_FILES.items():
        with open(ws.path(name), "wb") as f:
            f.write(content)
    ws.index = PassageIndex.from_embeddings(PASSAGES, _vectors())
    ws.kb = os.path.join(root, "kb")
    ws.index.save(ws.kb)
    ws.tfidf_index = PassageIndex.build(
        [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)],
        TfidfEncoder(dim=4).fit(TEXTS), verbose=0,
    )
    ws.tfidf_kb = os.path.join(root, "tfidf_kb")
    ws.tfidf_index.save(ws.tfidf_kb)
    ws.other_tfidf = TfidfEncoder(dim=4).fit(TEXTS[::-1] + ["Atlantis sank."])

    def outside(kb):
        shutil.copy(_data_file(kb, "embeddings.npy"), os.path.join(root, "outside.npy"))
        _edit_json(os.path.join(kb, "manifest.json"),
                   lambda m: m["files"]["embeddings"].update(path="../../outside.npy"))

    ws.outside_kb = _copy(ws.kb, os.path.join(root, "outside_kb"), outside)
    ws.truncated_kb = _copy(ws.kb, os.path.join(root, "truncated_kb"),
                            lambda kb: _truncate(_data_file(kb, "embeddings.npy")))
    ws.corrupted_kb = _copy(ws.kb, os.path.join(root, "corrupted_kb"),
                            lambda kb: _flip_a_byte(_data_file(kb, "index.faiss")))
    ws.teacher, ws.student, ws.narrow_student = (
        _logits_model(5), _logits_model(5), _logits_model(4)
    )
    ws.cache_dir = os.path.join(root, "cache")
    TeacherCache.build(ws.teacher, _dataset(0), ws.cache_dir, verbose=0)
    ws.other_dataset = _dataset(1)
    ws.truncated_cache = _copy(
        ws.cache_dir, os.path.join(root, "truncated_cache"),
        lambda c: _truncate(os.path.join(c, "teacher_logits.npy")),
    )

    def cache_outside(cache):
        shutil.copy(os.path.join(cache, "teacher_logits.npy"), os.path.join(root, "x.npy"))
        _edit_json(os.path.join(cache, "metadata.json"),
                   lambda m: m["files"]["teacher_logits"].update(path="../x.npy"))

    ws.outside_cache = _copy(ws.cache_dir, os.path.join(root, "outside_cache"), cache_outside)
    ws.keras_file = os.path.join(root, "model.keras")
    _logits_model(2).save(ws.keras_file)
    return ws


def _listing(root):
    """Every path under `root` with its size and mtime (folders too)."""
    listing = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            listing[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return listing


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(
    case, workspace, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    workspace.out = str(tmp_path / "out")
    before = _listing(workspace.root), _listing(str(tmp_path))
    with pytest.raises(case.error) as caught:
        case.run(workspace)
    message = str(caught.value)
    assert case.message in message, message
    assert "Received: " in message and message.rsplit("Received: ", 1)[1].strip(), message
    if case.error is CommandError:
        assert caught.value.status == cli.EXIT_BAD_INPUT, message
        assert message.startswith("keras-ragkd "), message
    assert (_listing(workspace.root), _listing(str(tmp_path))) == before


def test_at_least_30_bad_inputs_with_unique_ids():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert sum(case.error is CommandError for case in CASES) >= 10


# --- The doc, generated from the table ---


def _cell(text):
    return text.replace("|", "\\|")


def render_doc():
    lines = [
        "# Bad inputs and the errors they get",
        "",
        "Generated from `CASES` in `tests/test_bad_inputs.py` (`python "
        "tests/test_bad_inputs.py > docs/bad_inputs.md`); every row is a test that "
        "checks the error class, a message ending in `Received: ...` and that nothing "
        "was written. The command-line rows run `keras-ragkd` and get exit status 2 "
        "with one line on stderr. Rows marked *known gap* get a worse error today; "
        "the note says what the fix is (the test is a strict xfail until then).",
        "",
        "| # | id | call | error | message contains |",
        "|---|----|------|-------|------------------|",
    ]
    for number, case in enumerate(CASES, 1):
        error = case.error_name
        if case.xfail:
            error += f" (*known gap*: {case.xfail})"
        lines.append(
            f"| {number} | `{case.id}` | `{_cell(case.call)}` | {_cell(error)} | "
            f"\"{_cell(case.message)}\" ... Received: ... |"
        )
    return "\n".join(lines) + "\n"


def test_the_doc_lists_every_case():
    with open(DOC, encoding="utf-8") as f:
        assert f.read() == render_doc(), (
            "docs/bad_inputs.md is stale: python tests/test_bad_inputs.py > docs/bad_inputs.md"
        )


if __name__ == "__main__":
    sys.stdout.write(render_doc())


# --- Loading never executes code from an artifact ---


def _lambda_encoder(vocabulary_size):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocabulary_size, 8, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Lambda(lambda x: x * 2.0),
        keras.layers.UnitNormalization(),
    ])


def test_model_folder_with_a_lambda_layer_is_refused(tmp_path):
    """Keras' `safe_mode` holds in our loader: a Python lambda in a model
    folder's config is not deserialized."""
    from keras_ragkd.rag import RagPreprocessor
    from keras_ragkd.rag import build_rag_question_answerer
    from keras_ragkd.models import load_minilm_tokenizer

    passages = country_passages(["France", "Japan", "Peru"])
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), [p["text"] for p in passages], question_length=8,
        passage_length=12, answer_length=4, query_as_text=False,
    )
    encoder = _lambda_encoder(preprocessor.vocabulary_size)
    token_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(token_ids)))
    index.save(str(tmp_path / "kb"))
    model = build_rag_question_answerer(index, encoder, preprocessor, generator="tiny",
                                        num_docs=2, dropout=0.0)
    model.save_to_preset(str(tmp_path / "model"))
    before = _listing(str(tmp_path))
    with pytest.raises(ValueError, match=r"`Lambda` layer.*safe_mode=False"):
        RagQuestionAnswerer.from_preset(str(tmp_path / "model"))
    assert _listing(str(tmp_path)) == before


def test_distiller_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    teacher = _logits_model(5)
    student = keras.Sequential([
        keras.Input((3,)), keras.layers.Lambda(lambda x: x + 1.0), keras.layers.Dense(5),
    ])
    distiller = Distiller(teacher, student)
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    with pytest.raises(ValueError, match=r"`Lambda` layer.*safe_mode=False"):
        keras.saving.load_model(path)
    # The refusal is Keras' safe mode, not a file our loader cannot read.
    reloaded = keras.saving.load_model(path, safe_mode=False)
    assert isinstance(reloaded, Distiller)


class _WatchedPipe:
    """A named pipe that records whether anything opened it for reading.

    Opening a FIFO for reading blocks until a writer opens it; a thread keeps
    trying to open it for writing without blocking (which fails with ENXIO
    while there is no reader), so a reader is seen, and released, at once.
    """

    def __init__(self, path):
        import threading

        self.path, self.opened = path, False
        os.mkfifo(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        import time

        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.001)
                continue
            self.opened = True
            os.close(fd)  # The reader reads end-of-file.

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def _name_outside(workspace, tmp_path, source, manifest, edit):
    folder = str(tmp_path / "artifact")
    shutil.copytree(source, folder)
    _edit_json(os.path.join(folder, manifest), edit)
    return folder


@pytest.mark.parametrize(
    "artifact", ["index", "index-describe", "index-data-folder", "cache", "model-folder"]
)
def test_manifests_are_checked_before_any_file_they_name_is_opened(
    artifact, workspace, tmp_path
):
    """A manifest naming `../pipe` is refused without the pipe ever being opened."""
    pipe = str(tmp_path / "pipe")
    if artifact == "index-data-folder":
        # The data folder itself is `..`: its files would be read from beside it.
        folder = _name_outside(workspace, tmp_path, workspace.kb, "manifest.json",
                               lambda m: m.update(data_folder=".."))
        pipe = str(tmp_path / "index.faiss")
        load = PassageIndex.load
    elif artifact.startswith("index"):
        folder = _name_outside(
            workspace, tmp_path, workspace.kb, "manifest.json",
            lambda m: m["files"]["embeddings"].update(path="../../pipe"),
        )
        load = PassageIndex.load if artifact == "index" else PassageIndex.describe
    elif artifact == "cache":
        folder = _name_outside(
            workspace, tmp_path, workspace.cache_dir, "metadata.json",
            lambda m: m["files"]["teacher_logits"].update(path="../pipe"),
        )
        load = TeacherCache.load
    else:
        folder = str(tmp_path / "artifact")
        os.makedirs(folder)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"format": "keras_ragkd.rag_preset.v1", "model": {},
                       "files": {"../pipe": {"bytes": 0, "sha256": ""},
                                 "model.weights.h5": {"bytes": 0, "sha256": ""}}}, f)
        load = RagQuestionAnswerer.from_preset
    with _WatchedPipe(pipe) as watched:
        with pytest.raises(ValueError, match="Received: "):
            load(folder)
    assert not watched.opened
