"""Distillation losses against NumPy references: values, weights, caches, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.distillation import DistillationLoss
from keras_ragkd.distillation import ForwardKL
from keras_ragkd.distillation import GeneralizedJSD
from keras_ragkd.distillation import LogitsDistillation
from keras_ragkd.distillation import ReverseKL
from keras_ragkd.distillation import TopKKL
from keras_ragkd.distillation import TopKTailKL
from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation import kd_divergence
from keras_ragkd.distillation import losses
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


# -- loss objects ------------------------------------------------------------


def _softmax(z, temperature):
    z = np.asarray(z, "float64") / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):
    return (p * np.log(p / q)).sum(-1)


def numpy_divergence(name, p, q, beta=None):
    """Reference divergences of distributions `p` (teacher) and `q` (student)."""
    if name == "forward":
        return _kl(p, q)
    if name == "reverse":
        return _kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * _kl(p, m) + (1 - beta) * _kl(q, m)


CASES = [
    (ForwardKL(), "forward", None),
    (ReverseKL(), "reverse", None),
    (GeneralizedJSD(beta=0.5), "jsd", 0.5),
    (GeneralizedJSD(beta=0.1), "jsd", 0.1),
    (GeneralizedJSD(beta=0.9), "jsd", 0.9),
]


def _logits(shape, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(scale=3.0, size=shape).astype("float32"),
        rng.normal(scale=3.0, size=shape).astype("float32"),
    )


@pytest.mark.parametrize("loss, name, beta", CASES, ids=lambda c: repr(c))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("shape", [(5, 11), (3, 4, 9)])
def test_each_loss_matches_numpy_per_position(loss, name, beta, temperature, shape):
    teacher, student = _logits(shape, 4)
    p, q = _softmax(teacher, temperature), _softmax(student, temperature)
    expected = temperature**2 * numpy_divergence(name, p, q, beta)
    values = np.asarray(loss.per_position(teacher, student, temperature))
    assert values.dtype == np.float32 and values.shape == shape[:-1]
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def test_jsd_end_points_are_forward_and_reverse_kl():
    teacher, student = _logits((4, 3, 8), 5)
    for beta, other in ((0.0, ForwardKL()), (1.0, ReverseKL())):
        np.testing.assert_array_equal(
            GeneralizedJSD(beta=beta).per_position(teacher, student, 2.0),
            other.per_position(teacher, student, 2.0),
        )
    # Close to the ends, JSD(β)/β → forward KL/… is not the family's limit:
    # TRL defines the ends by the KLs, and so do we; inside, it is bounded.
    bound = np.log(2.0) * 4.0
    inside = np.asarray(GeneralizedJSD(beta=0.5).per_position(teacher, student, 2.0))
    assert np.all(inside >= 0) and np.all(inside <= bound + 1e-5)


def test_forward_kl_object_equals_kd_divergence():
    teacher, student = _logits((6, 10), 6)
    np.testing.assert_array_equal(
        ForwardKL().per_position(teacher, student, 3.0), kd_divergence(teacher, student, 3.0)
    )


def _weights_reference(values, weights):
    return (weights * values).sum() / weights.sum()


@pytest.mark.parametrize("loss, name, beta", CASES[:3], ids=lambda c: repr(c))
def test_call_is_the_weighted_mean_over_valid_positions(loss, name, beta):
    teacher, student = _logits((4, 5, 7), 7)
    labels = np.random.default_rng(8).integers(1, 7, (4, 5))
    labels[:, 3:] = 0
    example_weights = np.array([1.0, 0.5, 2.0, 0.0], "float32")
    mask = np.ones((4, 5), bool)
    mask[0, 2] = False
    expected_values = 4.0 * numpy_divergence(
        name, _softmax(teacher, 2.0), _softmax(student, 2.0), beta
    )
    weights = example_weights[:, None] * mask * (labels != 0)
    value = loss(
        teacher, student, sample_weight=example_weights, mask=mask,
        labels=labels, ignore_class=0, temperature=2.0,
    )
    np.testing.assert_allclose(value, _weights_reference(expected_values, weights), rtol=1e-5)
    # A Keras mask on the student outputs counts like `mask`.
    masked = tf.constant(student)
    masked._keras_mask = tf.constant(mask)
    again = loss(teacher, masked, sample_weight=example_weights, labels=labels,
                 ignore_class=0, temperature=2.0)
    np.testing.assert_allclose(again, value, rtol=1e-6)
    # Per-position weights.
    per_position = np.random.default_rng(9).uniform(0, 2, (4, 5)).astype("float32")
    np.testing.assert_allclose(
        loss(teacher, student, sample_weight=per_position, temperature=2.0),
        _weights_reference(expected_values, per_position),
        rtol=1e-5,
    )


def test_losses_compute_in_float32_from_bfloat16():
    teacher, _ = _logits((4, 6), 10)
    student = tf.cast(teacher, "bfloat16")
    for loss, _, _ in CASES + [(TopKTailKL(top_k=6), None, None)]:
        values = loss.per_position(teacher, student, 2.0)
        assert values.dtype == "float32"
        np.testing.assert_allclose(values, 0.0, atol=1e-2)


def test_log_probabilities_give_the_same_losses_as_logits():
    teacher, student = _logits((3, 4, 9), 11)
    log_p = tf.nn.log_softmax(teacher).numpy()
    log_q = tf.nn.log_softmax(student).numpy()
    for loss, _, _ in CASES:
        for temperature in (1.0, 2.5):
            np.testing.assert_allclose(
                loss.per_position(log_p, log_q, temperature),
                loss.per_position(teacher, student, temperature),
                rtol=1e-4, atol=1e-6,
            )


def test_tokens_ruled_out_by_a_model_stay_finite():
    # Log-probabilities of -inf: a token with zero probability (RAG marginals,
    # vocabulary masks). Terms of zero probability count as zero, so a
    # divergence is finite wherever it is mathematically: KL(p ‖ q) where
    # p rules a token out, KL(q ‖ p) where q does, JSD always.
    with np.errstate(divide="ignore"):
        ruled_out = np.log(np.array([[0.5, 0.5, 0.0]], "float32"))
    spread = np.log(np.array([[0.25, 0.5, 0.25]], "float32"))
    np.testing.assert_allclose(
        ForwardKL().per_position(ruled_out, spread, 1.0), [0.5 * np.log(2.0)], rtol=1e-5
    )
    np.testing.assert_allclose(
        ReverseKL().per_position(spread, ruled_out, 1.0), [0.5 * np.log(2.0)], rtol=1e-5
    )
    p, q = np.array([[0.5, 0.5, 0.0]]), np.array([[0.25, 0.5, 0.25]])
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = 0.5 * np.nansum(p * np.log(p / m)) + 0.5 * np.nansum(q * np.log(q / m))
    for teacher, student in ((ruled_out, spread), (spread, ruled_out)):
        np.testing.assert_allclose(
            GeneralizedJSD(beta=0.5).per_position(teacher, student, 1.0), [expected], rtol=1e-5
        )


# -- top-k with the tail -----------------------------------------------------------


def _cached_fields(teacher, k, temperature):
    indices = np.argsort(-teacher, axis=-1)[..., :k]
    top = np.take_along_axis(teacher, indices, -1)
    p_top = np.take_along_axis(_softmax(teacher, temperature), indices, -1)
    rest = np.log(np.maximum(1 - p_top.sum(-1), 1e-30)).astype("float32")
    fields = {
        cached_batch.TEACHER_TOP_LOGITS: top,
        cached_batch.TEACHER_TOP_INDICES: indices.astype("int32"),
        cached_batch.TEACHER_REST_LOG_MASS: rest,
    }
    return fields, indices


def _numpy_buckets(teacher, student, indices, temperature):
    p, q = _softmax(teacher, temperature), _softmax(student, temperature)
    p_top, q_top = np.take_along_axis(p, indices, -1), np.take_along_axis(q, indices, -1)
    p_b = np.concatenate([p_top, 1 - p_top.sum(-1, keepdims=True)], -1)
    q_b = np.concatenate([q_top, 1 - q_top.sum(-1, keepdims=True)], -1)
    return p_b, q_b


@pytest.mark.parametrize("loss, name, beta", CASES[:3], ids=lambda c: repr(c))
def test_every_loss_reads_a_top_k_cache_through_the_buckets(loss, name, beta):
    teacher, student = _logits((6, 20), 12)
    fields, indices = _cached_fields(teacher, 4, 2.0)
    p_b, q_b = _numpy_buckets(teacher, student, indices, 2.0)
    expected = 4.0 * numpy_divergence(name, p_b, q_b, beta)
    np.testing.assert_allclose(
        loss.per_position(fields, student, 2.0), expected, rtol=1e-4, atol=1e-5
    )


def test_top_k_tail_kl_of_live_logits_matches_numpy_and_cached():
    teacher, student = _logits((2, 3, 12), 13)
    fields, indices = _cached_fields(teacher, 5, 1.5)
    p_b, q_b = _numpy_buckets(teacher, student, indices, 1.5)
    live = TopKTailKL(top_k=5).per_position(teacher, student, 1.5)
    np.testing.assert_allclose(live, 1.5**2 * _kl(p_b, q_b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        live, TopKTailKL().per_position(fields, student, 1.5), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        live, topk_kd_divergence(*fields.values(), student, 1.5), rtol=1e-5, atol=1e-6
    )


def test_top_k_tail_kl_with_the_whole_vocabulary_is_the_full_kl():
    teacher, student = _logits((3, 4, 9), 14)
    np.testing.assert_allclose(
        TopKTailKL(top_k=9).per_position(teacher, student, 2.0),
        ForwardKL().per_position(teacher, student, 2.0),
        rtol=1e-4, atol=1e-5,
    )


def test_top_k_kl_renormalises_the_top_k_and_drops_the_tail():
    teacher, student = _logits((2, 3, 12), 17)
    fields, indices = _cached_fields(teacher, 5, 1.5)
    p_b, q_b = _numpy_buckets(teacher, student, indices, 1.5)
    p_top = p_b[..., :-1] / p_b[..., :-1].sum(-1, keepdims=True)
    q_top = q_b[..., :-1] / q_b[..., :-1].sum(-1, keepdims=True)
    live = TopKKL(top_k=5).per_position(teacher, student, 1.5)
    np.testing.assert_allclose(live, 1.5**2 * _kl(p_top, q_top), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        live, TopKKL().per_position(fields, student, 1.5), rtol=1e-5, atol=1e-6
    )
    whole = TopKKL(top_k=12).per_position(teacher, student, 1.5)
    np.testing.assert_allclose(
        whole, ForwardKL().per_position(teacher, student, 1.5), rtol=1e-4, atol=1e-5
    )


def test_cache_temperature_must_be_the_loss_temperature():
    teacher, student = _logits((2, 6), 15)
    fields, _ = _cached_fields(teacher, 3, 2.0)
    fields[cached_batch.CACHE_TEMPERATURE] = np.full((2,), 2.0, "float32")
    ForwardKL().per_position(fields, student, 2.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature it was built with"):
        ForwardKL().per_position(fields, student, 1.0)


def test_top_k_tail_kl_needs_k_for_full_logits():
    teacher, student = _logits((2, 6), 16)
    with pytest.raises(ValueError, match="Received: top_k=None"):
        TopKTailKL().per_position(teacher, student, 1.0)


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [ForwardKL(), ReverseKL(temperature=2.0), GeneralizedJSD(beta=0.3),
     TopKTailKL(top_k=4, temperature=1.5), TopKKL(top_k=3),
     LogitsDistillation(4.0, loss="reverse_kl")],
    ids=repr,
)
def test_losses_serialize_round_trip(loss):
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    teacher, student = _logits((3, 6), 17)
    np.testing.assert_array_equal(
        restored.per_position(teacher, student, 2.0), loss.per_position(teacher, student, 2.0)
    )


def test_names_resolve_to_losses():
    assert isinstance(losses.get("forward_kl"), ForwardKL)
    assert isinstance(losses.get("kl_divergence"), ForwardKL)
    assert isinstance(losses.get("reverse_kl"), ReverseKL)
    assert losses.get("jsd").beta == 0.5
    assert isinstance(losses.get("top_k_tail_kl"), TopKTailKL)
    assert type(losses.get("top_k_kl")) is TopKKL
    jsd = GeneralizedJSD(beta=0.2)
    assert losses.get(jsd) is jsd
    assert isinstance(losses.get(keras.saving.serialize_keras_object(jsd)), GeneralizedJSD)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: losses.get("cosine"), "Received: distillation_loss='cosine'"),
        (lambda: GeneralizedJSD(beta=1.5), "Received: beta=1.5"),
        (lambda: GeneralizedJSD(beta=True), "Received: beta=True"),
        (lambda: GeneralizedJSD(beta=float("nan")), "Received: beta=nan"),
        (lambda: ForwardKL(temperature=0.0), "Received: temperature=0.0"),
        (lambda: TopKTailKL(top_k=0), "Received: top_k=0"),
        (lambda: LogitsDistillation(loss="categorical_crossentropy"),
         "Received: distillation_loss='categorical_crossentropy'"),
    ],
)
def test_bad_loss_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_custom_loss_plugs_in_by_subclassing():
    class SquaredProbabilityGap(DistillationLoss):
        def divergence(self, teacher_log_probs, student_log_probs):
            gap = keras.ops.exp(teacher_log_probs) - keras.ops.exp(student_log_probs)
            return keras.ops.sum(gap * gap, axis=-1)

    teacher, student = _logits((3, 5), 18)
    expected = ((_softmax(teacher, 1.0) - _softmax(student, 1.0)) ** 2).sum(-1).mean()
    np.testing.assert_allclose(SquaredProbabilityGap()(teacher, student), expected, rtol=1e-5)


def test_vocabulary_mismatch_of_outputs_is_refused():
    with pytest.raises(ValueError, match=r"same vocabulary.*Received: teacher output shape=\(2, 5\)"):
        ForwardKL().validate_outputs(np.zeros((2, 5)), np.zeros((2, 6)))
