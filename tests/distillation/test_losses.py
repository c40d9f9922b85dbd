import numpy as np
import pytest

from keras_ragkd.distillation import kd_divergence
from keras_ragkd.distillation import topk_kd_divergence


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("shape", [(5, 11), (3, 4, 9)])
def test_kd_divergence_matches_numpy(temperature, shape, numpy_kd):
    rng = np.random.default_rng(0)
    teacher = rng.normal(scale=4.0, size=shape).astype("float32")
    student = rng.normal(scale=4.0, size=shape).astype("float32")
    values = np.asarray(kd_divergence(teacher, student, temperature))
    assert values.shape == shape[:-1]
    np.testing.assert_allclose(
        values, numpy_kd(teacher, student, temperature), rtol=1e-4, atol=1e-5
    )


def test_kd_divergence_is_zero_for_identical_logits_and_finite_for_extremes():
    logits = np.array([[80.0, -80.0, 0.0], [1.0, 2.0, 3.0]], "float32")
    np.testing.assert_allclose(kd_divergence(logits, logits, 2.0), 0.0, atol=1e-5)
    extreme = np.asarray(kd_divergence(logits, -logits, 1.0))
    assert np.all(np.isfinite(extreme)) and np.all(extreme > 0)


def test_kd_divergence_of_bfloat16_student_is_float32():
    teacher = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    import tensorflow as tf

    student = tf.cast(teacher, "bfloat16")
    values = kd_divergence(teacher, student, 2.0)
    assert values.dtype == "float32"
    np.testing.assert_allclose(values, 0.0, atol=1e-2)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_topk_kd_divergence_matches_bucketed_numpy(temperature):
    rng = np.random.default_rng(2)
    teacher = rng.normal(scale=3.0, size=(6, 20)).astype("float32")
    student = rng.normal(scale=3.0, size=(6, 20)).astype("float32")
    k = 4
    indices = np.argsort(-teacher, axis=-1)[:, :k]
    top = np.take_along_axis(teacher, indices, -1)

    def softmax(z):
        e = np.exp((z - z.max(-1, keepdims=True)) / temperature)
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher.astype("float64")), softmax(student.astype("float64"))
    p_top, q_top = np.take_along_axis(p, indices, -1), np.take_along_axis(q, indices, -1)
    p_buckets = np.concatenate([p_top, 1 - p_top.sum(-1, keepdims=True)], -1)
    q_buckets = np.concatenate([q_top, 1 - q_top.sum(-1, keepdims=True)], -1)
    expected = temperature**2 * (p_buckets * np.log(p_buckets / q_buckets)).sum(-1)
    rest_log_mass = np.log(1 - p_top.sum(-1))
    values = topk_kd_divergence(top, indices, rest_log_mass, student, temperature)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def test_topk_with_full_vocabulary_equals_full_kd(numpy_kd):
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(2, 3, 5)).astype("float32")
    student = rng.normal(size=(2, 3, 5)).astype("float32")
    indices = np.argsort(-teacher, axis=-1)
    top = np.take_along_axis(teacher, indices, -1)
    rest = np.full((2, 3), np.log(1e-30), "float32")
    np.testing.assert_allclose(
        topk_kd_divergence(top, indices, rest, student, 2.0),
        numpy_kd(teacher, student, 2.0),
        rtol=1e-4,
        atol=1e-5,
    )
