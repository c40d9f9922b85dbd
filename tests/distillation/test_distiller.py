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
