import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd import Distiller
from keras_ragkd import TeacherCache
from keras_ragkd.distillation import teacher_cache as teacher_cache_module


def _dataset(x, y, batch_size=50, sample_weight=None):
    tensors = (x, y) if sample_weight is None else (x, y, sample_weight)
    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)


def _clone(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


@pytest.mark.parametrize("in_memory", [True, False])
def test_cached_training_equals_live_teacher(
    digits, trained_teacher, dense_classifier, tmp_path, monkeypatch, in_memory
):
    if not in_memory:
        monkeypatch.setattr(teacher_cache_module, "IN_MEMORY_BYTES", 0)
    x, y = digits
    weights = np.random.default_rng(0).uniform(0, 1, 300).astype("float32")
    dataset = _dataset(x[:300], y[:300], sample_weight=weights)
    cache = TeacherCache.build(trained_teacher, dataset, tmp_path / "cache", verbose=0)
    assert cache.count == 300 and cache.top_k is None
    student = dense_classifier(8, seed=1)
    twin = _clone(student)

    live = Distiller(trained_teacher, student, temperature=2.0)
    live.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    live_logs = live.fit(dataset, epochs=2, verbose=0).history

    offline = Distiller(None, twin, temperature=2.0)
    offline.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    offline_logs = offline.fit(cache.attach(dataset), epochs=2, verbose=0).history

    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(offline_logs[name], live_logs[name], rtol=1e-5)
    for a, b in zip(student.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    evaluated = offline.evaluate(cache.attach(dataset), return_dict=True, verbose=0)
    expected = live.evaluate(dataset, return_dict=True, verbose=0)
    assert evaluated["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_load_reads_the_same_cache_without_pickle(digits, trained_teacher, tmp_path):
    x, y = digits
    dataset = _dataset(x[:120], y[:120])
    built = TeacherCache.build(trained_teacher, dataset, tmp_path / "c", verbose=0)
    loaded = TeacherCache.load(tmp_path / "c")
    assert loaded.fingerprint == built.fingerprint
    logits = np.load(tmp_path / "c" / "teacher_logits.npy", allow_pickle=False)
    np.testing.assert_allclose(
        logits, trained_teacher.predict(x[:120], verbose=0), rtol=1e-5, atol=1e-6
    )
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".old"))]
    assert leftovers == [] and not any(
        n.endswith(".raw") for n in os.listdir(tmp_path / "c")
    )


def test_topk_cache_trains_and_matches_full_cache_when_k_is_vocab(
    digits, trained_teacher, dense_classifier, tmp_path
):
    x, y = digits
    dataset = _dataset(x[:200], y[:200])
    full = TeacherCache.build(trained_teacher, dataset, tmp_path / "full", verbose=0)
    every = TeacherCache.build(
        trained_teacher, dataset, tmp_path / "k10", top_k=10, temperature=3.0, verbose=0
    )
    top3 = TeacherCache.build(
        trained_teacher, dataset, tmp_path / "k3", top_k=3, temperature=3.0, verbose=0
    )
    distiller = Distiller(None, dense_classifier(8, seed=2), temperature=3.0)
    distiller.compile(optimizer="sgd")
    a = distiller.evaluate(full.attach(dataset), return_dict=True, verbose=0)
    b = distiller.evaluate(every.attach(dataset), return_dict=True, verbose=0)
    assert b["distillation_loss"] == pytest.approx(a["distillation_loss"], rel=1e-4)
    history = distiller.fit(top3.attach(dataset), epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["distillation_loss"][1] < history["distillation_loss"][0]
    distiller.temperature = 1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="top-k TeacherCache"):
        distiller.evaluate(top3.attach(dataset), verbose=0)


def test_cache_that_does_not_match_the_dataset_is_refused(
    digits, trained_teacher, tmp_path
):
    x, y = digits
    cache = TeacherCache.build(
        trained_teacher, _dataset(x[:100], y[:100]), tmp_path / "c", verbose=0
    )
    with pytest.raises(ValueError, match="Received: dataset with count=90"):
        cache.attach(_dataset(x[:90], y[:90]))
    with pytest.raises(ValueError, match="does not match"):
        cache.attach(_dataset(x[100:200], y[100:200]))
    with pytest.raises(ValueError, match="does not match"):
        shuffled = tf.data.Dataset.from_tensor_slices((x[:100], y[:100]))
        cache.attach(shuffled.shuffle(100, seed=1).batch(50))
    with pytest.raises(ValueError, match="batched differently"):
        cache.attach(_dataset(x[:100], y[:100], batch_size=30))


def test_distiller_without_teacher_refuses_uncached_batches(digits, dense_classifier):
    x, y = digits
    distiller = Distiller(None, dense_classifier(8))
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="without cached teacher logits"):
        distiller.fit(x[:32], y[:32], verbose=0)


def test_bad_build_arguments(digits, trained_teacher, tmp_path):
    x, y = digits
    dataset = _dataset(x[:20], y[:20])
    with pytest.raises(ValueError, match="Received: temperature=None"):
        TeacherCache.build(trained_teacher, dataset, tmp_path / "a", top_k=3)
    with pytest.raises(ValueError, match="Received: top_k=0"):
        TeacherCache.build(trained_teacher, dataset, tmp_path / "a", top_k=0, temperature=1.0)
    with pytest.raises(ValueError, match="Received: a batch without labels"):
        TeacherCache.build(trained_teacher, dataset.map(lambda a, b: a), tmp_path / "a", verbose=0)
    with pytest.raises(ValueError, match="Received: dtype='int8'"):
        TeacherCache.build(trained_teacher, dataset, tmp_path / "a", dtype="int8")
    with pytest.raises(ValueError, match=r"vocabulary \(10\)\. Received: top_k=11"):
        TeacherCache.build(trained_teacher, dataset, tmp_path / "a", top_k=11, temperature=1.0)
    with pytest.raises(ValueError, match="empty. Received: dataset="):
        TeacherCache.build(trained_teacher, dataset.take(0), tmp_path / "a")
    reshuffled = tf.data.Dataset.from_tensor_slices((x[:20], y[:20])).shuffle(20).batch(5)
    with pytest.raises(ValueError, match="deterministic dataset.*Received: 4 batches"):
        TeacherCache.build(trained_teacher, reshuffled, tmp_path / "a", verbose=0)
    assert os.listdir(tmp_path) == []  # Failed builds leave nothing behind.
    TeacherCache.build(trained_teacher, dataset, tmp_path / "a", verbose=0)
    with pytest.raises(ValueError, match="overwrite=True"):
        TeacherCache.build(trained_teacher, dataset, tmp_path / "a", verbose=0)
    TeacherCache.build(trained_teacher, dataset, tmp_path / "a", overwrite=True, verbose=0)
    with pytest.raises(ValueError, match="Received: directory="):
        TeacherCache.load(tmp_path / "missing")
