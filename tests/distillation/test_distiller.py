import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd import Distiller
from keras_ragkd.distillation import TeacherCache


def _compiled(distiller, **kwargs):
    kwargs.setdefault("optimizer", keras.optimizers.SGD(0.1))
    distiller.compile(**kwargs)
    return distiller


def _student_copy(student):
    clone = keras.models.clone_model(student)
    clone.set_weights(student.get_weights())
    return clone


# -- loss values -------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_evaluate_matches_numpy_weighted_means(
    digits, trained_teacher, dense_classifier, numpy_kd, numpy_sparse_ce, temperature
):
    x, y = digits
    x, y = x[:100], y[:100]
    weights = np.random.default_rng(0).uniform(0.0, 2.0, 100).astype("float32")
    student = dense_classifier(8, seed=2)
    distiller = _compiled(
        Distiller(trained_teacher, student, alpha=0.3, temperature=temperature)
    )
    logs = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=32, return_dict=True, verbose=0
    )
    t, s = trained_teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    hard = (weights * numpy_sparse_ce(y, s)).sum() / weights.sum()
    soft = (weights * numpy_kd(t, s, temperature)).sum() / weights.sum()
    np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-4)
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], 0.3 * hard + 0.7 * soft, rtol=1e-4)


def _token_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 7, size=(6, 5)).astype("int32")
    lengths = np.array([5, 3, 1, 4, 2, 5])
    valid = np.arange(5)[None, :] < lengths[:, None]
    tokens = np.where(valid, tokens, 0)
    labels = rng.integers(0, 7, size=(6, 5)).astype("int32")
    return tokens, labels, valid


def _numpy_token_losses(teacher, student, tokens, labels, valid, numpy_kd, numpy_sparse_ce):
    t, s = teacher.predict(tokens, verbose=0), student.predict(tokens, verbose=0)
    hard = numpy_sparse_ce(np.where(valid, labels, 0), s)[valid].mean()
    soft = numpy_kd(t, s, 2.0)[valid].mean()
    return hard, soft


@pytest.mark.parametrize("padding", ["keras_mask", "sample_weight", "ignore_class"])
def test_sequence_padding_is_excluded_from_both_terms(
    sequence_model, numpy_kd, numpy_sparse_ce, padding
):
    tokens, labels, valid = _token_batch()
    # Only the "keras_mask" variant masks id 0 in the models; the others
    # mark padding with a (batch, time) sample weight or an ignored label.
    masked = padding == "keras_mask"
    teacher = sequence_model(16, seed=1, mask_zero=masked)
    student = sequence_model(4, seed=2, mask_zero=masked)
    kwargs, sample_weight, y, filler = {}, None, labels, 5
    if padding == "sample_weight":
        sample_weight = valid.astype("float32")
    if padding == "ignore_class":
        kwargs["ignore_class"] = -1
        y, filler = np.where(valid, labels, -1), -1
    distiller = _compiled(Distiller(teacher, student, temperature=2.0, **kwargs))
    logs = distiller.evaluate(
        tokens, y, sample_weight=sample_weight, batch_size=6, return_dict=True, verbose=0
    )
    hard, soft = _numpy_token_losses(
        teacher, student, tokens, labels, valid, numpy_kd, numpy_sparse_ce
    )
    np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-4)
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-4, atol=1e-6)
    # Other labels at padded positions change nothing.
    again = distiller.evaluate(
        tokens, np.where(valid, y, filler), sample_weight=sample_weight,
        batch_size=6, return_dict=True, verbose=0,
    )
    np.testing.assert_allclose(again["loss"], logs["loss"], rtol=1e-6)


def test_masked_teacher_errors_leave_the_soft_loss_where_the_teacher_is_right(
    digits, trained_teacher, dense_classifier, numpy_kd, numpy_sparse_ce
):
    x, y = digits
    x, y = x[:200], y[:200]
    weights = np.random.default_rng(1).uniform(0.0, 2.0, 200).astype("float32")
    student = dense_classifier(8, seed=12)
    distiller = _compiled(
        Distiller(trained_teacher, student, alpha=0.3, temperature=2.0,
                  mask_teacher_errors=True)
    )
    logs = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=64, return_dict=True, verbose=0
    )
    t, s = trained_teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    right = t.argmax(-1) == y
    assert 0 < right.sum() < len(y)  # The teacher makes some mistakes here.
    hard = (weights * numpy_sparse_ce(y, s)).sum() / weights.sum()
    soft = (weights * right * numpy_kd(t, s, 2.0)).sum() / weights.sum()
    np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-4)
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-4, atol=1e-6)
    # One-hot labels with a categorical cross-entropy mask the same examples.
    one_hot = _compiled(
        Distiller(trained_teacher, student, alpha=0.3, temperature=2.0,
                  mask_teacher_errors=True),
        loss="categorical_crossentropy",
    ).evaluate(x, np.eye(10, dtype="float32")[y], sample_weight=weights,
               batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(one_hot["distillation_loss"], soft, rtol=1e-4, atol=1e-6)


def test_masked_teacher_errors_on_cached_token_marginals(sequence_model, tmp_path):
    tokens, _, valid = _token_batch()
    teacher = sequence_model(16, seed=1, mask_zero=False)
    student = sequence_model(4, seed=2, mask_zero=False)
    teacher_top = teacher.predict(tokens, verbose=0).argmax(-1).astype("int32")
    wrong = (teacher_top + 1) % 7
    labels = np.where(valid, np.where(np.arange(5) % 2 == 0, teacher_top, wrong), -1)
    dataset = tf.data.Dataset.from_tensor_slices((tokens, labels)).batch(3)
    cache = TeacherCache.build(
        teacher, dataset, str(tmp_path / "cache"), top_k=3, temperature=2.0, verbose=0
    )

    def distillation_loss(mask_teacher_errors, model_labels):
        distiller = _compiled(
            Distiller(None, student, temperature=2.0, ignore_class=-1,
                      mask_teacher_errors=mask_teacher_errors)
        )
        batches = tf.data.Dataset.from_tensor_slices((tokens, model_labels)).batch(3)
        return distiller.evaluate(
            cache.attach(batches), return_dict=True, verbose=0
        )["distillation_loss"]

    everywhere = distillation_loss(False, labels)
    agreed = np.where(valid, teacher_top, -1)
    assert distillation_loss(True, agreed) == pytest.approx(everywhere, rel=1e-5)
    # Positions where the teacher's top token is wrong add nothing.
    partly = distillation_loss(True, labels)
    assert 0 < partly < everywhere
    assert distillation_loss(True, np.where(valid, wrong, -1)) == 0.0


def test_zero_weight_samples_change_nothing(digits, trained_teacher, dense_classifier):
    x, y = digits
    good_x, good_y = x[:32], y[:32]
    junk_x = np.random.default_rng(1).uniform(0, 50, (16, 64)).astype("float32")
    junk_y = np.zeros(16, "int32")
    student = dense_classifier(8, seed=3)
    reference = _student_copy(student)

    weighted = _compiled(Distiller(trained_teacher, student))
    weighted.fit(
        np.concatenate([good_x, junk_x]),
        np.concatenate([good_y, junk_y]),
        sample_weight=np.concatenate([np.ones(32), np.zeros(16)]).astype("float32"),
        batch_size=48,
        shuffle=False,
        verbose=0,
    )
    plain = _compiled(Distiller(trained_teacher, reference))
    plain.fit(good_x, good_y, batch_size=48, shuffle=False, verbose=0)
    for a, b in zip(student.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradients_reach_only_the_student(digits, trained_teacher, dense_classifier):
    x, y = digits
    student = dense_classifier(8, seed=4)
    teacher_before = [w.copy() for w in trained_teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    distiller = _compiled(Distiller(trained_teacher, student))
    trainable_ids = {id(v) for v in distiller.trainable_variables}
    assert trainable_ids == {id(v) for v in student.trainable_variables}
    assert not trained_teacher.trainable
    distiller.fit(x[:64], y[:64], batch_size=32, verbose=0)
    for before, after in zip(teacher_before, trained_teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.allclose(a, b) for a, b in zip(student_before, student.get_weights())
    )


# -- Keras workflow ----------------------------------------------------------


def test_fit_evaluate_predict_with_callbacks(
    digits, trained_teacher, dense_classifier, tmp_path
):
    x, y = digits
    student = dense_classifier(16, seed=5)
    distiller = _compiled(
        Distiller(trained_teacher, student), metrics=["accuracy"]
    )
    assert distiller.built
    csv_path = tmp_path / "log.csv"
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.keras"), monitor="val_student_loss", mode="min",
            save_best_only=True
        ),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=5),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
        keras.callbacks.CSVLogger(str(csv_path)),
    ]
    history = distiller.fit(
        x[:1200], y[:1200], validation_data=(x[1200:], y[1200:]),
        epochs=3, batch_size=64, callbacks=callbacks, verbose=0,
    )
    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert len(history.history[name]) == 3
        assert len(history.history["val_" + name]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert os.path.exists(tmp_path / "best.keras")
    with open(csv_path) as file:
        header = next(csv.reader(file))
    assert {"val_student_loss", "val_distillation_loss", "val_accuracy"} <= set(header)
    logs = distiller.evaluate(x[1200:], y[1200:], return_dict=True, verbose=0)
    assert set(logs) == {"loss", "student_loss", "distillation_loss", "accuracy"}
    np.testing.assert_allclose(
        distiller.predict(x[:5], verbose=0), student.predict(x[:5], verbose=0), rtol=1e-6
    )


def test_keras_round_trip_continues_training(
    digits, trained_teacher, dense_classifier, tmp_path
):
    x, y = digits
    distiller = _compiled(
        Distiller(trained_teacher, dense_classifier(8, seed=6), alpha=0.4,
                  mask_teacher_errors=True),
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=["accuracy"],
    )
    distiller.fit(x[:256], y[:256], batch_size=64, verbose=0)
    distiller.alpha = 0.25
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, Distiller) and restored.compiled
    assert float(restored.alpha.numpy()) == pytest.approx(0.25)
    assert restored.mask_teacher_errors
    assert int(restored.optimizer.iterations.numpy()) == 4
    np.testing.assert_allclose(
        restored.predict(x[:8], verbose=0), distiller.predict(x[:8], verbose=0), rtol=1e-5
    )
    assert not restored.teacher.trainable
    history = restored.fit(x[:256], y[:256], batch_size=64, verbose=0)
    assert int(restored.optimizer.iterations.numpy()) == 8
    assert np.isfinite(history.history["loss"][0])
    assert "accuracy" in history.history


def test_alpha_and_temperature_assignment_applies_without_recompiling(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    distiller = _compiled(Distiller(trained_teacher, dense_classifier(8, seed=7)))
    first = distiller.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    test_function = distiller.test_function
    distiller.alpha = 1.0
    only_hard = distiller.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    assert only_hard["loss"] == pytest.approx(first["student_loss"], rel=1e-5)
    distiller.temperature = 1.0
    cooler = distiller.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    assert cooler["distillation_loss"] != pytest.approx(first["distillation_loss"])
    assert distiller.test_function is test_function


def test_summary_shows_teacher_and_student(trained_teacher, dense_classifier):
    distiller = Distiller(trained_teacher, dense_classifier(8, name="tiny_student"))
    lines = []
    distiller.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert "teacher" in text and "tiny_student" in text


def test_student_artifacts_exclude_the_teacher(
    digits, trained_teacher, dense_classifier, tmp_path
):
    x, _ = digits
    student = dense_classifier(8, seed=8)
    distiller = Distiller(trained_teacher, student)
    distiller.save_student(str(tmp_path / "student.keras"))
    reloaded = keras.saving.load_model(str(tmp_path / "student.keras"))
    assert reloaded.count_params() == student.count_params()
    distiller.export_student(str(tmp_path / "export"))
    served = tf.saved_model.load(str(tmp_path / "export"))
    assert sum(int(np.prod(v.shape)) for v in served.variables) == student.count_params()
    np.testing.assert_allclose(
        served.serve(x[:4]), student.predict(x[:4], verbose=0), rtol=1e-5
    )


def test_jit_compile_gives_the_same_step(digits, trained_teacher, dense_classifier):
    x, y = digits
    student = dense_classifier(8, seed=9)
    twin = _student_copy(student)
    eager = _compiled(Distiller(trained_teacher, student), jit_compile=False)
    xla = _compiled(Distiller(trained_teacher, twin), jit_compile=True)
    a = eager.fit(x[:64], y[:64], batch_size=64, shuffle=False, verbose=0)
    b = xla.fit(x[:64], y[:64], batch_size=64, shuffle=False, verbose=0)
    assert xla.jit_compile
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-4)
    for u, v in zip(student.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_mixed_bfloat16_student_with_float32_teacher(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        student = dense_classifier(8, seed=10)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert student.layers[-1].compute_dtype == "bfloat16"
    assert trained_teacher.layers[-1].compute_dtype == "float32"
    distiller = _compiled(Distiller(trained_teacher, student), metrics=["accuracy"])
    history = distiller.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0]


def test_feature_distillation_projects_and_runs_student_once(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    calls = []

    class CountingIdentity(keras.layers.Layer):
        def call(self, inputs):
            calls.append(1)
            return inputs

    keras.utils.set_random_seed(11)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(12, activation="relu", name="student_hidden")(
        CountingIdentity()(inputs)
    )
    student = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    distiller = _compiled(
        Distiller(
            trained_teacher, student, feature_layers=[("hidden", "student_hidden")]
        ),
        run_eagerly=True,
    )
    projection = distiller.projections[0]
    assert projection.kernel.shape == (12, 64)
    assert {id(v) for v in projection.trainable_variables} <= {
        id(v) for v in distiller.trainable_variables
    }
    kernel_before = projection.kernel.numpy().copy()
    calls.clear()
    history = distiller.fit(x[:64], y[:64], batch_size=16, verbose=0)
    assert len(calls) == 4  # one student forward pass per step
    assert history.history["feature_loss"][0] > 0
    assert not np.allclose(kernel_before, projection.kernel.numpy())


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": -0.1}, "Received: alpha=-0.1"),
        ({"alpha": 1.5}, "Received: alpha=1.5"),
        ({"temperature": 0.0}, "Received: temperature=0.0"),
        ({"temperature": -2}, "Received: temperature=-2"),
    ],
)
def test_bad_hyper_parameters(trained_teacher, dense_classifier, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distiller(trained_teacher, dense_classifier(8), **kwargs)


def test_bad_assignment_is_refused(trained_teacher, dense_classifier):
    distiller = Distiller(trained_teacher, dense_classifier(8))
    with pytest.raises(ValueError, match="Received: alpha=2.0"):
        distiller.alpha = 2.0
    with pytest.raises(ValueError, match="Received: temperature=0.0"):
        distiller.temperature = 0.0
    assert float(distiller.alpha.numpy()) == 0.5


def test_vocabulary_mismatch_is_refused(trained_teacher, dense_classifier):
    with pytest.raises(ValueError, match=r"Received: teacher output shape=\(None, 10\)"):
        Distiller(trained_teacher, dense_classifier(8, num_classes=7))


def test_probability_outputs_are_refused(trained_teacher, dense_classifier):
    softmax_student = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10, activation="softmax")]
    )
    with pytest.raises(ValueError, match="must output logits.*Received: student"):
        Distiller(trained_teacher, softmax_student)
    softmax_teacher = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10), keras.layers.Softmax()]
    )
    with pytest.raises(ValueError, match="must output logits.*Received: teacher"):
        Distiller(softmax_teacher, dense_classifier(8))


def test_unbuilt_teacher_is_refused(dense_classifier):
    unbuilt = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="Received: teacher.built=False"):
        Distiller(unbuilt, dense_classifier(8))


def test_masking_teacher_errors_needs_class_labels(trained_teacher, dense_classifier):
    distiller = Distiller(trained_teacher, dense_classifier(8), mask_teacher_errors=True)
    with pytest.raises(ValueError, match="class-index or one-hot labels.*Received: loss='mse'"):
        distiller.compile(optimizer="sgd", loss="mse")


def test_probability_loss_is_refused(trained_teacher, dense_classifier):
    distiller = Distiller(trained_teacher, dense_classifier(8))
    with pytest.raises(ValueError, match="from_logits=False"):
        distiller.compile(
            optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy()
        )


# -- distillation losses -------------------------------------------------------


def _numpy_divergence(name, teacher, student, temperature):
    def softmax(z):
        z = np.asarray(z, "float64") / temperature
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher), softmax(student)
    kl = lambda a, b: (a * np.log(a / b)).sum(-1)  # noqa: E731
    if name == "reverse_kl":
        return temperature**2 * kl(q, p)
    m = (p + q) / 2
    return temperature**2 * (kl(p, m) + kl(q, m)) / 2


@pytest.mark.parametrize("name", ["reverse_kl", "jsd"])
def test_distillation_loss_by_name_matches_numpy(
    digits, trained_teacher, dense_classifier, numpy_sparse_ce, name
):
    x, y = digits
    x, y = x[:100], y[:100]
    weights = np.random.default_rng(2).uniform(0.0, 2.0, 100).astype("float32")
    student = dense_classifier(8, seed=13)
    distiller = _compiled(
        Distiller(trained_teacher, student, alpha=0.3, temperature=2.0, distillation_loss=name)
    )
    logs = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=32, return_dict=True, verbose=0
    )
    t, s = trained_teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    soft = (weights * _numpy_divergence(name, t, s, 2.0)).sum() / weights.sum()
    hard = (weights * numpy_sparse_ce(y, s)).sum() / weights.sum()
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], 0.3 * hard + 0.7 * soft, rtol=1e-4)


def test_default_loss_is_the_forward_kl_object(trained_teacher, dense_classifier):
    from keras_ragkd.distillation import ForwardKL

    distiller = Distiller(trained_teacher, dense_classifier(8))
    (loss,) = distiller.distillation_losses
    assert type(loss) is ForwardKL and loss.temperature is None
    assert distiller.distillation_loss_weights == [1.0]


def test_keras_round_trip_keeps_the_distillation_loss(
    digits, trained_teacher, dense_classifier, tmp_path
):
    from keras_ragkd.distillation import GeneralizedJSD

    x, y = digits
    distiller = _compiled(
        Distiller(trained_teacher, dense_classifier(8, seed=14),
                  distillation_loss=GeneralizedJSD(beta=0.3, temperature=1.5))
    )
    distiller.fit(x[:64], y[:64], batch_size=32, verbose=0)
    path = str(tmp_path / "jsd.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    (loss,) = restored.distillation_losses
    assert isinstance(loss, GeneralizedJSD)
    assert (loss.beta, loss.temperature) == (0.3, 1.5)
    a = distiller.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    b = restored.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    np.testing.assert_allclose(b["distillation_loss"], a["distillation_loss"], rtol=1e-6)


def test_every_loss_on_a_full_vocabulary_top_k_cache_equals_the_live_teacher(
    sequence_model, tmp_path
):
    tokens, labels, valid = _token_batch()
    teacher = sequence_model(16, seed=1, mask_zero=False)
    student = sequence_model(4, seed=2, mask_zero=False)
    labels = np.where(valid, labels, -1)
    dataset = tf.data.Dataset.from_tensor_slices((tokens, labels)).batch(3)
    # top_k = vocabulary: the tail is empty, so the buckets are the vocabulary.
    cache = TeacherCache.build(
        teacher, dataset, str(tmp_path / "cache"), top_k=7, temperature=2.0, verbose=0
    )
    for name in ("forward_kl", "reverse_kl", "jsd", "top_k_tail_kl"):
        cached = _compiled(Distiller(None, student, temperature=2.0, ignore_class=-1,
                                     distillation_loss=name))
        from_cache = cached.evaluate(cache.attach(dataset), return_dict=True, verbose=0)
        live_loss = "forward_kl" if name == "top_k_tail_kl" else name
        live = _compiled(Distiller(teacher, student, temperature=2.0, ignore_class=-1,
                                   distillation_loss=live_loss))
        expected = live.evaluate(dataset, return_dict=True, verbose=0)
        np.testing.assert_allclose(
            from_cache["distillation_loss"], expected["distillation_loss"],
            rtol=1e-4, atol=1e-6, err_msg=name,
        )


# -- output kinds and padding from the models ----------------------------------


def _log_softmax_model(model):
    return keras.Model(model.inputs, keras.layers.Activation("log_softmax")(model.outputs[0]))


def test_log_probability_outputs_are_declared_not_guessed(
    digits, trained_teacher, dense_classifier
):
    x, y = digits
    student = dense_classifier(8, seed=15)
    log_prob_teacher = _log_softmax_model(trained_teacher)
    with pytest.raises(ValueError, match="teacher_outputs='log_probabilities'.*Received: teacher"):
        Distiller(log_prob_teacher, student)
    declared = _compiled(
        Distiller(log_prob_teacher, student, teacher_outputs="log_probabilities")
    )
    assert declared.teacher_output_kind == "log_probabilities"
    reference = _compiled(Distiller(trained_teacher, student))
    a = declared.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    b = reference.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    np.testing.assert_allclose(a["distillation_loss"], b["distillation_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="Received: student_outputs='probabilities'"):
        Distiller(trained_teacher, student, student_outputs="probabilities")
    softmax_teacher = keras.Model(
        trained_teacher.inputs, keras.layers.Softmax()(trained_teacher.outputs[0])
    )
    with pytest.raises(ValueError, match="must output logits"):
        Distiller(softmax_teacher, student, teacher_outputs="log_probabilities")


class DeclaringModel(keras.Model):
    """A subclassed model that declares its output kind and padding id."""

    output_kind = "log_probabilities"
    padding_id = 0

    def __init__(self, vocab=7, seed=0, **kwargs):
        super().__init__(**kwargs)
        keras.utils.set_random_seed(seed)
        self.embedding = keras.layers.Embedding(vocab, 8)
        self.dense = keras.layers.Dense(vocab)

    def call(self, tokens):
        return keras.ops.log_softmax(self.dense(self.embedding(tokens)), axis=-1)


def test_output_kind_and_padding_id_come_from_the_models(sequence_model):
    tokens, labels, valid = _token_batch()
    labels = np.where(valid, labels, 0)
    teacher, student = DeclaringModel(seed=1), DeclaringModel(seed=2)
    teacher(tokens), student(tokens)
    auto = _compiled(Distiller(teacher, student, temperature=2.0))
    assert (auto.teacher_output_kind, auto.student_output_kind) == ("log_probabilities",) * 2
    assert auto.ignore_class == 0
    explicit = _compiled(Distiller(teacher, student, temperature=2.0, ignore_class=0))
    a = auto.evaluate(tokens, labels, batch_size=6, return_dict=True, verbose=0)
    b = explicit.evaluate(tokens, labels, batch_size=6, return_dict=True, verbose=0)
    assert a == b
    # Padding really is ignored: other labels there change nothing.
    c = auto.evaluate(tokens, np.where(valid, labels, 0), batch_size=6, return_dict=True,
                      verbose=0)
    assert c == a
    # The compiled loss's ignore_class comes first.
    other = _compiled(
        Distiller(teacher, student),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
    )
    assert other.ignore_class == -1
    # Models without a padding id get none.
    plain = _compiled(Distiller(sequence_model(8, seed=1), sequence_model(4, seed=2)))
    assert plain.ignore_class is None


def test_vocabulary_mismatch_of_subclassed_models_is_refused_at_the_first_step():
    tokens, labels, _ = _token_batch()
    teacher, student = DeclaringModel(vocab=7, seed=1), DeclaringModel(vocab=9, seed=2)
    teacher(tokens), student(tokens)
    distiller = _compiled(Distiller(teacher, student))
    with pytest.raises(ValueError, match=r"same vocabulary.*Received: teacher output shape="
                                         r"\(6, 5, 7\), student output shape=\(6, 5, 9\)"):
        distiller.evaluate(tokens, labels, batch_size=6, verbose=0)


# -- keras.distillation arguments ------------------------------------------------


def test_keras_arguments_map_onto_ours(
    digits, trained_teacher, dense_classifier, numpy_kd, numpy_sparse_ce
):
    from keras_ragkd.distillation import FeatureDistillation
    from keras_ragkd.distillation import LogitsDistillation

    x, y = digits
    x, y = x[:64], y[:64]
    student = dense_classifier(64, seed=16)
    distiller = _compiled(
        Distiller(
            teacher=trained_teacher,
            student=student,
            distillation_losses=[
                LogitsDistillation(temperature=2.0),
                LogitsDistillation(temperature=4.0, loss="reverse_kl"),
                FeatureDistillation(teacher_layer_name="hidden", student_layer_name="hidden"),
            ],
            distillation_loss_weights=[0.7, 0.2, 0.1],
            student_loss_weight=0.4,
        )
    )
    assert distiller.student_loss_weight == pytest.approx(0.4)
    logs = distiller.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    t, s = trained_teacher.predict(x, verbose=0), student.predict(x, verbose=0)

    def hidden(model):
        return keras.Model(model.inputs, model.get_layer("hidden").output).predict(x, verbose=0)

    feature = ((hidden(trained_teacher) - hidden(student)) ** 2).mean()
    soft = (
        0.7 * numpy_kd(t, s, 2.0).mean()
        + 0.2 * _numpy_divergence("reverse_kl", t, s, 4.0).mean()
        + 0.1 * feature
    )
    hard = numpy_sparse_ce(y, s).mean()
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], 0.4 * hard + 0.6 * soft, rtol=1e-4)
    assert "feature_loss" not in logs  # Keras' features are distillation terms.
    restored = Distiller.from_config(distiller.get_config())
    assert [type(term) for term in restored.distillation_losses] == [
        LogitsDistillation, LogitsDistillation, FeatureDistillation
    ]
    assert restored.distillation_loss_weights == [0.7, 0.2, 0.1]
    assert restored.distillation_losses[1].loss.get_config() == {"temperature": None}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0.3, "student_loss_weight": 0.5}, "pass one of them"),
        ({"distillation_loss": "jsd", "distillation_losses": ["reverse_kl"]}, "not both"),
        ({"distillation_losses": ["jsd", "reverse_kl"], "distillation_loss_weights": [1.0]},
         "Received: 1 weights for 2 losses"),
        ({"distillation_losses": []}, "Received: distillation_losses=\\[\\]"),
        ({"distillation_loss_weights": [1.0]}, "Received: distillation_losses=None"),
        ({"distillation_loss": "cosine"}, "Received: distillation_loss='cosine'"),
        ({"teacher_outputs": "probs"}, "Received: teacher_outputs='probs'"),
    ],
)
def test_conflicting_loss_arguments_are_refused(
    trained_teacher, dense_classifier, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        Distiller(trained_teacher, dense_classifier(8), **kwargs)
