"""A `TeacherCache` of LLM-sized outputs: `(batch, time, 49152)` logits.

The cache streams to disk (memory stays far below the `N·T·V·4` bytes of
the full logits), reports its size per token, traces the teacher once for
all batch sizes, records what built it and refuses other data or formats.
"""

import json
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.distillation import TeacherCache
from keras_ragkd.distillation.teacher_cache_provenance import weights_fingerprint

TIME, VOCAB = 8, 49152


def _lm_teacher(vocab=VOCAB, seed=0, name="lm_teacher"):
    """Token ids `(batch, TIME)` -> logits `(batch, TIME, vocab)`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((TIME,), dtype="int32")
    hidden = keras.layers.Embedding(100, 16)(inputs)
    logits = keras.layers.Dense(vocab, kernel_initializer=keras.initializers.RandomNormal(
        stddev=1.0, seed=seed))(hidden)
    return keras.Model(inputs, logits, name=name)


def _tokens(examples, batch_size, seed=1):
    x = np.random.default_rng(seed).integers(0, 100, (examples, TIME)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, x)).batch(batch_size)


def _resident_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def _reset_peak_resident_bytes():
    """Resets VmHWM to the current RSS (Linux); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def test_top_k_cache_of_llm_logits_streams_to_disk(tmp_path, capsys):
    examples, batch_size, top_k = 256, 8, 32
    teacher, dataset = _lm_teacher(), _tokens(examples, batch_size)
    TeacherCache.build(teacher, _tokens(8, batch_size), tmp_path / "warm", top_k=top_k,
                       temperature=2.0, verbose=0)  # TensorFlow's own one-off memory.
    full_bytes = examples * TIME * VOCAB * 4  # 403 MB
    capsys.readouterr()
    measured_rss = _reset_peak_resident_bytes()
    before = _resident_bytes("VmRSS")
    tracemalloc.start()
    try:
        cache = TeacherCache.build(teacher, dataset, tmp_path / "c", top_k=top_k,
                                   temperature=2.0, verbose=1)
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert numpy_peak < full_bytes / 40  # About one batch of logits (6 MB) at most.
    if measured_rss:
        assert _resident_bytes("VmHWM") - before < full_bytes / 4
    printed = capsys.readouterr().out
    # float32 top logits + uint16 indices per position, a float32 rest mass,
    # and three 128-byte `.npy` headers.
    expected = top_k * (4 + 2) + 4 + 3 * 128 / (examples * TIME)
    assert cache.num_tokens == examples * TIME
    assert cache.bytes_per_token == pytest.approx(expected)
    assert f"{cache.bytes_per_token:.1f} bytes/token" in printed and "32/32" in printed
    indices = cache.arrays()["teacher_top_indices"]
    assert indices.dtype == np.uint16 and cache.vocabulary_size == VOCAB
    x = next(iter(dataset))[0]
    top = tf.math.top_k(teacher(x), k=top_k)
    np.testing.assert_array_equal(indices[:batch_size], top.indices.numpy())
    np.testing.assert_allclose(cache.arrays()["teacher_top_logits"][:batch_size],
                               top.values.numpy(), rtol=1e-6)
    batch = next(iter(cache.attach(dataset)))[1]
    assert batch["teacher_top_indices"].dtype == tf.int32


def test_half_precision_cache_halves_the_bytes_per_token(tmp_path):
    teacher, dataset = _lm_teacher(), _tokens(16, 8)
    cache = TeacherCache.build(teacher, dataset, tmp_path / "c", top_k=16, temperature=1.0,
                               dtype="float16", verbose=0)
    assert cache.bytes_per_token == pytest.approx(16 * (2 + 2) + 2 + 3 * 128 / (16 * TIME))


def test_vocabulary_beyond_uint16_stores_int32_indices(tmp_path, monkeypatch):
    from keras_ragkd.distillation import teacher_cache as module

    monkeypatch.setattr(module, "IN_MEMORY_BYTES", 0)  # The memory-mapped reader.
    teacher, dataset = _lm_teacher(vocab=70_000), _tokens(4, 2)
    cache = TeacherCache.build(teacher, dataset, tmp_path / "c", top_k=4, temperature=1.0,
                               verbose=0)
    assert cache.arrays()["teacher_top_indices"].dtype == np.int32
    batch = next(iter(cache.attach(dataset)))[1]
    assert batch["teacher_top_indices"].dtype == tf.int32
    assert int(tf.reduce_max(batch["teacher_top_indices"])) < 70_000


class _TraceCounter(keras.Model):
    """Counts its traces: Python runs `call` only when TensorFlow traces."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.traces = inner, []
        self.built = True

    def call(self, x, training=False):
        self.traces.append(x.shape)
        return self.inner(x, training=training)


def test_a_smaller_last_batch_does_not_retrace_the_teacher(tmp_path):
    teacher = _TraceCounter(_lm_teacher(vocab=64), name="trace_counter")
    cache = TeacherCache.build(teacher, _tokens(10, 4), tmp_path / "c", verbose=0)
    assert cache.metadata["batch_sizes"] == [4, 4, 2]
    assert len(teacher.traces) == 1 and teacher.traces[0][0] is None


def test_provenance_records_the_teacher_and_the_caller(tmp_path):
    teacher, dataset = _lm_teacher(vocab=64), _tokens(6, 4)
    cache = TeacherCache.build(teacher, dataset, tmp_path / "c", top_k=4, temperature=1.0,
                               provenance={"preset": "tiny", "step": 3}, verbose=0)
    recorded = TeacherCache.load(tmp_path / "c").provenance
    assert recorded == cache.provenance
    assert recorded["teacher"]["name"] == "lm_teacher"
    assert recorded["teacher"]["parameters"] == teacher.count_params() == 1600 + 16 * 64 + 64
    assert recorded["teacher"]["weights_sha256"] == weights_fingerprint(teacher)
    assert recorded["caller"] == {"preset": "tiny", "step": 3}
    assert recorded["index"] is None and recorded["num_docs"] is None
    teacher.layers[-1].bias.assign(np.ones(64, "float32"))
    assert weights_fingerprint(teacher) != recorded["teacher"]["weights_sha256"]
    with pytest.raises(TypeError, match=r"JSON-serialisable.*Received: provenance="):
        TeacherCache.build(teacher, dataset, tmp_path / "d", provenance={"x": object()})


@pytest.mark.slow
def test_rag_teacher_provenance_records_its_index_and_num_docs(tmp_path):
    from keras_ragkd.data.countries import country_passages
    from keras_ragkd.rag import RagPreprocessor
    from keras_ragkd.rag import RagQuestionAnswerer
    from keras_ragkd.models import load_minilm_tokenizer
    from tests.rag.conftest import token_rag

    passages = country_passages(["France", "Peru"])
    questions = ["What is the capital of France?", "What is the capital of Peru?"]
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), [p["text"] for p in passages] + questions + ["Paris", "Lima"],
        question_length=12, passage_length=16, answer_length=4, query_as_text=False,
    )
    teacher = RagQuestionAnswerer(preprocessor, token_rag(preprocessor, passages, num_docs=2))
    data = teacher.preprocess(questions, ["Paris", "Lima"], batch_size=2)
    cache = TeacherCache.build(teacher, data, tmp_path / "c", top_k=4, temperature=1.0,
                               verbose=0)
    index = teacher.rag.retriever.index
    recorded = cache.provenance
    assert recorded["num_docs"] == 2 and recorded["marginalization"] == "token"
    assert recorded["index"]["passages"] == len(index) == len(passages)
    assert recorded["index"]["dim"] == index.dim and len(recorded["index"]["sha256"]) == 64
    assert recorded["teacher"]["parameters"] == teacher.count_params()


def test_another_dataset_is_refused_naming_both_fingerprints(tmp_path):
    teacher = _lm_teacher(vocab=64)
    cache = TeacherCache.build(teacher, _tokens(6, 4), tmp_path / "c", verbose=0)
    other = _tokens(6, 4, seed=2)
    other_fingerprint = TeacherCache.build(teacher, other, tmp_path / "o", verbose=0).fingerprint
    with pytest.raises(ValueError) as error:
        cache.attach(other)
    message = str(error.value)
    assert cache.fingerprint in message and other_fingerprint in message
    assert "'lm_teacher'" in message
    assert message.endswith(f"Received: dataset with count=6, fingerprint={other_fingerprint}")


@pytest.mark.parametrize("version, advice", [
    (2, "rebuild it with `TeacherCache.build`"),
    (4, "it was written by a newer keras_ragkd"),
])
def test_other_format_versions_are_refused(tmp_path, version, advice):
    TeacherCache.build(_lm_teacher(vocab=64), _tokens(4, 4), tmp_path / "c", verbose=0)
    path = tmp_path / "c" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["format_version"] = version
    path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=rf"reads version 3 only; {advice}.*"
                                         rf"Received: format_version={version} in "):
        TeacherCache.load(tmp_path / "c")
