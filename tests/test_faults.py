"""Writers killed with SIGKILL midway leave the previous version loadable.

Each test starts a writer process that writes version after version of one
artifact (an index save, a teacher-cache build, a SavedModel export, a model
folder) into the same place, kills it with SIGKILL after a random delay, and
checks that the place holds a complete version (the last one finished, or the
one being written if it got through its commit point) and nothing
half-written; five kills of five for each kind.

The writers are forked from a `multiprocessing` fork server that has imported
`keras_ragkd` (and TensorFlow) once but never ran TensorFlow, so a writer
starts in well under a second. Writers run under a umask of 0o022, and what
they leave must have the modes of plain user files (0644 files, 0755 folders).
"""

import ast
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import stat
import textwrap
import time

import numpy as np
import pytest

from keras_ragkd.distillation import TeacherCache
from keras_ragkd.retrieval import PassageIndex

KILLS = 5
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["keras_ragkd", "keras_ragkd.serving"])

PRELUDE = """
import os
import time
os.umask(0o022)

def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\\n")
"""

LOOP = """
setup()
log("ready")
while not os.path.exists(GO):
    time.sleep(0.002)
version = FIRST
while True:
    log(f"start {version}")
    write(version)
    log(f"done {version}")
    version += 1
"""


def _read_log(path):
    """`(started versions, done versions, ready)` from a writer's log."""
    started, done, ready = [], [], False
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            event, _, version = line.partition(" ")
            if event == "ready":
                ready = True
            else:
                (started if event == "start" else done).append(int(version))
    return started, done, ready


def _wait_for(path, predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read_log(path)
        if predicate(*state):
            return state
        if not process.is_alive():
            raise AssertionError(f"The writer died by itself (exit {process.exitcode}).")
        time.sleep(0.005)
    raise AssertionError(f"The writer made no progress in {timeout} s: {_read_log(path)}")


def _assert_user_modes(path):
    """Files 0644, folders 0755 (umask 0o022), all the way down."""
    for root, folders, files in os.walk(path):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755, root
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode == 0o644, os.path.join(root, name)


def _start_writer(script, tmp_path, target, kill):
    """Forks a writer; it sets up, logs "ready" and waits for its go file."""
    log, go = str(tmp_path / f"writer-{kill}.log"), str(tmp_path / f"writer-{kill}.go")
    namespace = {"LOG": log, "GO": go, "TARGET": target, "WORK": str(tmp_path),
                 "FIRST": 1000 * (kill + 1)}
    process = _CONTEXT.Process(target=exec, args=(script, namespace), daemon=True)
    process.start()
    return process, log, go


def kill_midway(tmp_path, source, load_version, kills=KILLS):
    """Kills a writer `kills` times at random moments; after each kill,
    `load_version(target)` must load the target and return its version, which
    must be the last finished one or the one being written.

    Writer `k + 1` is started (and sets up) while writer `k` writes; it
    starts writing only once the check after kill `k` is done.
    """
    target = str(tmp_path / "artifact")
    rng = random.Random()
    script = PRELUDE + textwrap.dedent(source) + LOOP
    duration, survivor, moments = None, None, []
    pending = _start_writer(script, tmp_path, target, 0)
    try:
        for kill in range(kills):
            process, log, go = pending
            _wait_for(log, lambda s, d, r: r, process)
            open(go, "w").close()
            pending = (
                _start_writer(script, tmp_path, target, kill + 1) if kill + 1 < kills else None
            )
            try:
                if duration is None:
                    # Time one whole write (which also leaves a first version).
                    _wait_for(log, lambda s, d, r: s, process)
                    begin = time.monotonic()
                    _wait_for(log, lambda s, d, r: d, process)
                    duration = time.monotonic() - begin
                else:
                    _wait_for(log, lambda s, d, r: s, process)
                delay = rng.uniform(0, duration)
                time.sleep(delay)
                os.kill(process.pid, signal.SIGKILL)
            finally:
                process.join(30)
            assert process.exitcode == -signal.SIGKILL
            started, done, _ = _read_log(log)
            moments.append(round(delay, 3))
            if done:
                survivor = done[-1]
            allowed = {survivor, started[-1]}
            version = load_version(target)
            assert version in allowed, (
                f"kill {kill} after {delay:.3f} s: found version {version}, expected one "
                f"of {allowed} (log: started {started}, done {done}; moments {moments})"
            )
            survivor = version
            # Beside the target: only dot-named leftovers of the killed writer.
            others = [n for n in os.listdir(tmp_path) if n != "artifact"]
            assert all(n.startswith((".", "writer-", "kb")) for n in others), others
            _assert_user_modes(target)
    finally:
        if pending is not None:
            pending[0].kill()
            pending[0].join(30)
    return target, moments


INDEX_WRITER = """
import numpy as np
from keras_ragkd.retrieval import PassageIndex

def setup():
    pass

def write(version):
    rng = np.random.default_rng(version)
    passages = [{"id": f"p{i}", "text": f"version {version} passage {i}"}
                for i in range(4000)]
    PassageIndex.from_embeddings(passages, rng.normal(size=(4000, 32))).save(TARGET)
"""


def test_index_save_killed_midway_leaves_the_previous_index(tmp_path):
    def load_version(target):
        index = PassageIndex.load(target)
        versions = {p.text.split()[1] for p in index.passages}
        assert len(index) == 4000 and len(versions) == 1, versions
        version = int(versions.pop())
        expected = np.random.default_rng(version).normal(size=(4000, 32))
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(index.embeddings, expected, atol=1e-6)
        return version

    target, _ = kill_midway(tmp_path, INDEX_WRITER, load_version)
    # The next save clears whatever the killed ones left inside the folder.
    PassageIndex.load(target).save(target)
    names = sorted(os.listdir(target))
    assert len(names) == 2 and names[0].startswith("data-") and names[1] == "manifest.json"


CACHE_WRITER = """
import keras
import numpy as np
import tensorflow as tf
from keras_ragkd.distillation import TeacherCache

def setup():
    global teacher, dataset
    x = np.random.default_rng(0).random((4096, 16), dtype="float32")
    teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, use_bias=False)])
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(4096, "int32"))).batch(256)

def write(version):
    teacher.layers[0].kernel.assign(np.full((16, 64), version, "float32"))
    TeacherCache.build(teacher, dataset, TARGET, overwrite=True, verbose=0)
"""


def test_teacher_cache_build_killed_midway_leaves_the_previous_cache(tmp_path):
    row_sums = np.random.default_rng(0).random((4096, 16), dtype="float32").sum(1)

    def load_version(target):
        logits = np.asarray(TeacherCache.load(target).arrays()["teacher_logits"])
        version = round(float(logits[0, 0] / row_sums[0]))
        np.testing.assert_allclose(
            logits, np.repeat(row_sums[:, None] * version, 64, axis=1), rtol=1e-5
        )
        return version

    kill_midway(tmp_path, CACHE_WRITER, load_version)
    # A later build removes the staging folders of the killed builds.
    version = 99
    cache_source = CACHE_WRITER.replace("TARGET", repr(str(tmp_path / "artifact")))
    namespace = {}
    exec(textwrap.dedent(cache_source), namespace)
    namespace["setup"]()
    namespace["write"](version)
    assert load_version(str(tmp_path / "artifact")) == version
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


RAG_WRITER = """
import math
import keras
import numpy as np
from keras_ragkd.data.countries import country_passages
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.serving import export_model
from keras_ragkd.models import load_minilm_tokenizer

def setup():
    global model
    passages = country_passages(["France", "Japan", "Peru"])
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), [p["text"] for p in passages], question_length=8,
        passage_length=12, answer_length=4, query_as_text=False,
    )
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(preprocessor.vocabulary_size, 8, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])
    token_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(token_ids)))
    index.save(os.path.join(WORK, f"kb-{FIRST}"))
    model = build_rag_question_answerer(
        index, encoder, preprocessor, generator="tiny", num_docs=2, dropout=0.0
    )

def write(version):
    # The version is the score scale: exp(log_doc_score_scale) = version + 1.
    model.rag.log_doc_score_scale.assign(math.log(version + 1))
    WRITE(model, TARGET)
"""


def _version_of_scale(log_scale):
    return round(math.exp(float(log_scale)) - 1)


@pytest.mark.slow
def test_export_killed_midway_leaves_the_previous_saved_model(tmp_path):
    import tensorflow as tf

    def load_version(target):
        reloaded = tf.saved_model.load(target)
        (scale,) = [v for v in reloaded.model_variables if "log_doc_score_scale" in v.name]
        assert set(reloaded.signatures) == {"serve", "retrieve"}
        return _version_of_scale(scale.numpy())

    source = RAG_WRITER.replace("WRITE(model, TARGET)", "export_model(model, TARGET)")
    kill_midway(tmp_path, source, load_version)


@pytest.mark.slow
def test_model_folder_save_killed_midway_leaves_the_previous_folder(tmp_path):
    from keras_ragkd.rag import RagQuestionAnswerer

    def load_version(target):
        model = RagQuestionAnswerer.from_preset(target)
        return _version_of_scale(model.rag.log_doc_score_scale.numpy())

    source = RAG_WRITER.replace("WRITE(model, TARGET)", "model.save_to_preset(TARGET)")
    kill_midway(tmp_path, source, load_version)


def _unsafe_calls(path):
    """Lines of `path` that could run code from data: pickle-like imports,
    `eval`/`exec`, `allow_pickle=True`, `safe_mode=False`, `np.load` without
    `allow_pickle=False`."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    unsafe_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(name.split(".")[0] in unsafe_modules for name in names):
                found.append(node.lineno)
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(
                function, "attr", "")
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec") or any(
                isinstance(keywords.get(key), ast.Constant) and keywords[key].value is value
                for key, value in (("allow_pickle", True), ("safe_mode", False))
            ):
                found.append(node.lineno)
            elif name == "load" and isinstance(function, ast.Attribute) and getattr(
                function.value, "id", "") in ("np", "numpy"
            ) and not (
                isinstance(keywords.get("allow_pickle"), ast.Constant)
                and keywords["allow_pickle"].value is False
            ):
                found.append(node.lineno)
    return found


def test_nothing_in_the_package_unpickles_or_evaluates_code():
    """Loading never runs code from an artifact: no pickle, eval, exec,
    `allow_pickle=True` or `safe_mode=False` anywhere in the package."""
    root = os.path.join(os.path.dirname(__file__), os.pardir, "keras_ragkd")
    offenders = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                offenders += [f"{os.path.relpath(path, root)}:{n}" for n in _unsafe_calls(path)]
    assert offenders == []


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A small `RagQuestionAnswerer` saved as a model folder (as the writers do)."""
    work = tmp_path_factory.mktemp("model_folder")
    namespace = {"os": os, "WORK": str(work), "FIRST": 0}
    exec(textwrap.dedent(RAG_WRITER), namespace)
    namespace["setup"]()
    namespace["model"].save_to_preset(str(work / "model"))
    return work / "model"


def _damaged_copy(model_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_folder, copy)
    return copy


@pytest.mark.parametrize("name", ["model.weights.h5", "assets/0/vocabulary.txt"])
def test_truncated_or_corrupted_model_folder_file_is_refused_by_name(
    model_folder, tmp_path, name
):
    from keras_ragkd.rag import RagQuestionAnswerer

    folder = _damaged_copy(model_folder, tmp_path)
    path = folder / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=rf"SHA-256 mismatch\). Received: file='.*{name}'"):
        RagQuestionAnswerer.from_preset(str(folder))
    path.write_bytes(bytes(content[:-10]))
    with pytest.raises(ValueError, match=rf"truncated.*Received: file='.*{name}' of \d+ bytes"):
        RagQuestionAnswerer.from_preset(str(folder))


@pytest.mark.parametrize("entry", ["../outside.h5", "/etc/hostname", "index/manifest.json"])
def test_model_folder_config_naming_files_outside_is_refused(model_folder, tmp_path, entry):
    from keras_ragkd.rag import RagQuestionAnswerer

    folder = _damaged_copy(model_folder, tmp_path)
    shutil.copy(folder / "model.weights.h5", tmp_path / "outside.h5")
    config = json.loads((folder / "config.json").read_text())
    config["files"][entry] = config["files"]["model.weights.h5"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"relative paths inside the folder.*Received: files="):
        RagQuestionAnswerer.from_preset(str(folder))


def test_model_folder_file_linked_outside_is_refused(model_folder, tmp_path):
    from keras_ragkd.rag import RagQuestionAnswerer

    folder = _damaged_copy(model_folder, tmp_path)
    shutil.move(folder / "model.weights.h5", tmp_path / "weights.h5")
    os.symlink(tmp_path / "weights.h5", folder / "model.weights.h5")
    with pytest.raises(ValueError, match=r"link to a file outside.*Received: file="):
        RagQuestionAnswerer.from_preset(str(folder))


def test_model_folder_with_a_damaged_index_is_refused(model_folder, tmp_path):
    from keras_ragkd.rag import RagQuestionAnswerer

    folder = _damaged_copy(model_folder, tmp_path)
    (data,) = [p for p in (folder / "index").iterdir() if p.name.startswith("data-")]
    (data / "embeddings.npy").write_bytes((data / "embeddings.npy").read_bytes()[:-4])
    expected = r"truncated.*Received: file='.*embeddings.npy' of \d+ bytes"
    with pytest.raises(ValueError, match=expected):
        RagQuestionAnswerer.from_preset(str(folder))
    assert RagQuestionAnswerer.from_preset(str(model_folder)).rag is not None
