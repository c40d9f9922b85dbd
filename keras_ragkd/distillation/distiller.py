"""`Distiller`: a Keras model that trains a student against a frozen teacher."""

import keras
import tensorflow as tf
from keras import ops

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation.losses import hard_loss_values
from keras_ragkd.distillation.losses import kd_divergence
from keras_ragkd.distillation.losses import topk_kd_divergence
from keras_ragkd.distribute import MultiWorkerFitMixin
from keras_ragkd.pipelines import is_raw_text
from keras_ragkd.pipelines import preprocessed_dataset

_LOGIT_LOSSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}


@keras.saving.register_keras_serializable(package="keras_ragkd")
class Distiller(MultiWorkerFitMixin, keras.Model):
    """Trains a student model to match a frozen teacher (knowledge distillation).

    The training loss is `α · L_hard + (1 − α) · L_soft`, where `L_hard` is the
    compiled loss of the student on the true labels and
    `L_soft = T² · KL(softmax(t / T) ‖ softmax(s / T))` compares teacher logits
    `t` and student logits `s` at temperature `T`, computed in float32 from
    logits. Both terms honour `sample_weight`, Keras masks (e.g. from
    `Embedding(mask_zero=True)`) and an ignored label class, and average over
    the valid examples or tokens of the global batch, so one replica and a
    `tf.distribute` strategy give the same loss and the same update.

    The teacher is frozen (`trainable=False`, called with `training=False`).
    `alpha` and `temperature` are non-trainable variables: assigning
    `distiller.alpha = 0.2` (for instance from `DistillationScheduler`) takes
    effect at the next step, without recompiling.

    `call`/`predict` return the student's outputs. `fit`/`evaluate` report
    `loss`, `student_loss`, `distillation_loss` (and `feature_loss` with
    feature distillation) plus the compiled metrics of the student, and their
    `val_` versions. Keras infers the direction only of `loss` and compiled
    metrics, so monitor the others with `mode="min"`, e.g.
    `ModelCheckpoint(path, monitor="val_student_loss", mode="min")`.

    A `.keras` file of a Distiller reloads compiled, with its optimizer
    state, so training continues where it stopped; the teacher and the
    student come back as models that are not compiled (their own optimizers,
    e.g. from training the teacher, are not distillation state and are not
    restored).

    Training can also run from a `TeacherCache` instead of a live teacher:
    pass `teacher=None` (or any teacher, which is then not run) and fit on
    `cache.attach(dataset)`.

    Args:
        teacher: a built Keras model that outputs logits `(batch, vocab)` or
            `(batch, time, vocab)`, or `None` to train only from cached teacher
            logits.
        student: a Keras model with the same output shape as the teacher.
        alpha: weight in `[0, 1]` of the hard (label) loss.
        temperature: softmax temperature `T > 0` of the soft loss.
        ignore_class: optional label value that marks padding: such positions
            count in neither term. Defaults to the compiled loss's
            `ignore_class`, if any.
        feature_layers: optional list of `(teacher_layer_name,
            student_layer_name)` pairs for hidden-state distillation (both
            models must be functional). A trainable `Dense` projection maps
            the student features to the teacher's width when they differ.
        feature_weight: weight of the mean-squared feature loss.
        mask_teacher_errors: if `True`, the soft loss counts only the
            positions (examples, or tokens of sequences) where the teacher's
            most likely class is the label, so the student never learns the
            teacher's mistakes; the hard loss still counts every position,
            and the soft term keeps its denominator (it is zero, not missing,
            where the teacher is wrong). Needs class-index or one-hot labels.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras, numpy as np
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    >>> distiller.compile(optimizer="sgd", metrics=["accuracy"])
    >>> x, y = np.random.rand(8, 4), np.random.randint(0, 3, 8)
    >>> logs = distiller.fit(x, y, epochs=1, verbose=0).history
    >>> sorted(logs)
    ['accuracy', 'distillation_loss', 'loss', 'student_loss']
    """

    def __init__(
        self,
        teacher,
        student,
        alpha=0.5,
        temperature=3.0,
        ignore_class=None,
        feature_layers=None,
        feature_weight=1.0,
        mask_teacher_errors=False,
        **kwargs,
    ):
        kwargs.setdefault("name", "distiller")
        super().__init__(**kwargs)
        _check_alpha(alpha)
        _check_temperature(temperature)
        _check_models(teacher, student)
        if teacher is not None:
            teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.ignore_class = ignore_class
        self.feature_layers = [tuple(pair) for pair in feature_layers or ()]
        self.feature_weight = float(feature_weight)
        self.mask_teacher_errors = bool(mask_teacher_errors)
        self._initial_alpha = float(alpha)
        self._initial_temperature = float(temperature)
        self._alpha = self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(alpha),
            trainable=False,
            name="alpha",
        )
        self._temperature = self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(temperature),
            trainable=False,
            name="temperature",
        )
        self.projections = []
        if self.feature_layers:
            self._build_feature_extractors()
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.feature_loss_tracker = (
            keras.metrics.Mean(name="feature_loss") if self.feature_layers else None
        )
        self._hard_loss = None
        teacher_built = teacher is None or teacher.built
        if teacher_built and student.built:
            self.built = True

    # -- schedulable hyper-parameters ---------------------------------------

    @property
    def alpha(self):
        """The hard-loss weight, a non-trainable float32 variable."""
        return self._alpha

    @alpha.setter
    def alpha(self, value):
        _check_alpha(float(value))
        self._alpha.assign(value)

    @property
    def temperature(self):
        """The softmax temperature, a non-trainable float32 variable."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        _check_temperature(float(value))
        self._temperature.assign(value)

    # -- Keras model API -----------------------------------------------------

    def build(self, input_shape=None):
        if not self.student.built:
            self.student.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training.

        Args:
            optimizer: a Keras optimizer or its name.
            loss: the hard (student vs. labels) loss, computed from logits.
                Defaults to `SparseCategoricalCrossentropy(from_logits=True)`.
                The names `"sparse_categorical_crossentropy"`,
                `"categorical_crossentropy"` and `"binary_crossentropy"`
                resolve to their `from_logits=True` versions, because the
                student outputs logits.
            metrics: metrics of the student's outputs, as in `Model.compile`.
            **kwargs: other `Model.compile` arguments (`weighted_metrics`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        self._hard_loss = _resolve_hard_loss(loss)
        if self.mask_teacher_errors and not _has_class_labels(self._hard_loss):
            raise ValueError(
                "`mask_teacher_errors=True` compares the teacher's most likely "
                "class with the label, so it needs class-index or one-hot "
                "labels (a sparse or categorical cross-entropy). "
                f"Received: loss={loss!r}"
            )
        if self.ignore_class is None:
            self.ignore_class = _config_value(self._hard_loss, "ignore_class")
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        self._compile_config.config["loss"] = loss

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, validation_data=None, shuffle=True,
            sample_weight=None, **kwargs):
        """`keras.Model.fit`; raw text goes through the student's preprocessor.

        For a student that is a task model with a `preprocessor` (keras-hub
        tasks, `RagQuestionAnswerer`), `x` may be what the student's own `fit`
        takes, e.g. question and answer strings: they are preprocessed (and
        shuffled each epoch) by the student's `preprocess_samples`, and the
        teacher reads the same inputs, so both must share the preprocessing
        (as RAG teachers and students share an output vocabulary).
        """
        preprocess = self._student_preprocessing()
        if preprocess is not None and is_raw_text(x):
            x = preprocessed_dataset(preprocess, x, y, sample_weight, batch_size, shuffle)
            y = sample_weight = batch_size = None
            shuffle = False  # Done by the dataset, each epoch.
        if preprocess is not None and validation_data is not None:
            validation_data = self._preprocessed_validation(preprocess, validation_data)
        return super().fit(
            x, y, batch_size=batch_size, validation_data=validation_data, shuffle=shuffle,
            sample_weight=sample_weight, **kwargs,
        )

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.evaluate`; raw text goes through the student's preprocessor."""
        preprocess = self._student_preprocessing()
        if preprocess is not None and is_raw_text(x):
            x = preprocessed_dataset(preprocess, x, y, sample_weight, batch_size)
            y = sample_weight = batch_size = None
        return super().evaluate(
            x, y, batch_size=batch_size, sample_weight=sample_weight, **kwargs
        )

    def _student_preprocessing(self):
        """The student's `preprocess_samples` when it is a task with a preprocessor."""
        if getattr(self.student, "preprocessor", None) is None:
            return None
        return getattr(self.student, "preprocess_samples", None)

    @staticmethod
    def _preprocessed_validation(preprocess, validation_data):
        if isinstance(validation_data, tuple) and is_raw_text(validation_data[0]):
            return preprocessed_dataset(preprocess, *validation_data)
        if is_raw_text(validation_data):
            return preprocessed_dataset(preprocess, validation_data)
        return validation_data

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y, teacher_outputs = cached_batch.split(y)
        if teacher_outputs is None:
            teacher_outputs = self._run_teacher(x)
        with tf.GradientTape() as tape:
            student_logits, student_features = self._run_student(x, True)
            terms = self._loss_terms(
                y, teacher_outputs, student_logits, student_features, sample_weight
            )
            loss = self.optimizer.scale_loss(terms["loss"])
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(terms, y, student_logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y, teacher_outputs = cached_batch.split(y)
        if teacher_outputs is None:
            teacher_outputs = self._run_teacher(x)
        student_logits, student_features = self._run_student(x, False)
        terms = self._loss_terms(
            y, teacher_outputs, student_logits, student_features, sample_weight
        )
        return self._update_metrics(terms, y, student_logits, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y, _ = cached_batch.split(y)
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": (
                    None
                    if self.teacher is None
                    else keras.saving.serialize_keras_object(self.teacher)
                ),
                "student": keras.saving.serialize_keras_object(self.student),
                "alpha": self._initial_alpha,
                "temperature": self._initial_temperature,
                "ignore_class": self.ignore_class,
                "feature_layers": [list(pair) for pair in self.feature_layers],
                "feature_weight": self.feature_weight,
                "mask_teacher_errors": self.mask_teacher_errors,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            if config[key] is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    _without_compile_config(config[key])
                )
        return cls(**config)

    # -- student artifacts ---------------------------------------------------

    def save_student(self, filepath):
        """Saves the student alone (no teacher weights) as a `.keras` file.

        Args:
            filepath: path ending in `.keras`.
        """
        self.student.save(filepath)

    def export_student(self, filepath, format="tf_saved_model", **kwargs):
        """Exports the student alone for serving (e.g. a SavedModel).

        Args:
            filepath: the export directory.
            format: as in `keras.Model.export`.
            **kwargs: passed to `keras.Model.export`.
        """
        self.student.export(filepath, format=format, **kwargs)

    # -- internals -----------------------------------------------------------

    def _build_feature_extractors(self):
        for model, role in ((self.teacher, "teacher"), (self.student, "student")):
            if model is None or not hasattr(model, "inputs"):
                raise ValueError(
                    "Feature distillation needs functional (or Sequential) "
                    f"teacher and student models. Received: {role}={model!r}"
                )
        teacher_names = [pair[0] for pair in self.feature_layers]
        student_names = [pair[1] for pair in self.feature_layers]
        teacher_features = [self.teacher.get_layer(n).output for n in teacher_names]
        student_features = [self.student.get_layer(n).output for n in student_names]
        # Extractors share the models' layers; setting them with
        # object.__setattr__ keeps Keras from tracking (and saving) the same
        # variables twice.
        object.__setattr__(
            self,
            "_teacher_extractor",
            keras.Model(self.teacher.inputs, [self.teacher.outputs[0]] + teacher_features),
        )
        object.__setattr__(
            self,
            "_student_extractor",
            keras.Model(self.student.inputs, [self.student.outputs[0]] + student_features),
        )
        for index, (t, s) in enumerate(zip(teacher_features, student_features)):
            if t.shape[-1] == s.shape[-1]:
                self.projections.append(None)
                continue
            projection = keras.layers.Dense(
                t.shape[-1], name=f"feature_projection_{index}"
            )
            projection.build(s.shape)
            self.projections.append(projection)

    def _run_teacher(self, x):
        if self.teacher is None:
            raise ValueError(
                "This Distiller has no teacher, so every batch must carry "
                "cached teacher logits: train on `TeacherCache.attach(dataset)`."
                " Received: a batch without cached teacher logits"
            )
        if self.feature_layers:
            logits, *features = self._teacher_extractor(x, training=False)
        else:
            logits, features = self.teacher(x, training=False), []
        logits = _stop_gradient_keep_mask(logits)
        features = [ops.stop_gradient(f) for f in features]
        return {cached_batch.TEACHER_LOGITS: logits, "features": features}

    def _run_student(self, x, training):
        if self.feature_layers:
            logits, *features = self._student_extractor(x, training=training)
            features = [
                f if p is None else p(f) for f, p in zip(features, self.projections)
            ]
            return logits, features
        return self.student(x, training=training), []

    def _loss_terms(self, y, teacher_outputs, student_logits, student_features, sample_weight):
        if self._hard_loss is None:
            raise ValueError(
                "The Distiller must be compiled before training or "
                "evaluation: call `distiller.compile(optimizer, ...)`. "
                "Received: distiller.compiled=False"
            )
        mask = getattr(student_logits, "_keras_mask", None)
        teacher_logits = teacher_outputs.get(cached_batch.TEACHER_LOGITS)
        if teacher_logits is not None:
            _check_logit_shapes(teacher_logits, student_logits)
            teacher_mask = getattr(teacher_logits, "_keras_mask", None)
            mask = _combine_masks(mask, teacher_mask)
        student_logits = ops.cast(student_logits, "float32")
        weights = _valid_weights(
            y, student_logits, sample_weight, mask, self.ignore_class
        )
        local_count = ops.sum(weights)
        global_count = _sum_over_replicas(local_count)

        def weighted_mean(values):
            # `where` keeps non-finite values at ignored positions out of the sum.
            values = ops.where(weights > 0, values, 0.0)
            return ops.divide_no_nan(ops.sum(values * weights), global_count)

        labels = _replace_ignored_labels(y, self.ignore_class)
        hard = weighted_mean(hard_loss_values(self._hard_loss, labels, student_logits))
        soft_values = self._soft_values(teacher_outputs, student_logits)
        if self.mask_teacher_errors:
            soft_values = soft_values * _teacher_is_right(labels, teacher_outputs)
        soft = weighted_mean(soft_values)
        alpha = ops.convert_to_tensor(self._alpha)
        loss = alpha * hard + (1.0 - alpha) * soft
        terms = {"student_loss": hard, "distillation_loss": soft}
        if self.feature_layers:
            feature = self._feature_loss(
                teacher_outputs, student_features, weights, global_count
            )
            loss = loss + self.feature_weight * feature
            terms["feature_loss"] = feature
        terms["weighted_loss"] = loss
        regularization = ops.zeros((), "float32")
        if self.student.losses:
            regularization = ops.sum(
                ops.stack([ops.cast(l, "float32") for l in self.student.losses])
            )
        terms["regularization"] = regularization
        terms["loss"] = loss + regularization / _num_replicas()
        terms["local_count"] = local_count
        terms["weights"] = weights
        terms["replica_share"] = ops.divide_no_nan(local_count, global_count)
        return terms

    def _soft_values(self, teacher_outputs, student_logits):
        temperature = ops.convert_to_tensor(self._temperature)
        if cached_batch.TEACHER_TOP_LOGITS in teacher_outputs:
            cache_temperature = teacher_outputs[cached_batch.CACHE_TEMPERATURE]
            tf.debugging.assert_near(
                ops.reshape(cache_temperature, (-1,))[:1],
                ops.reshape(temperature, (1,)),
                message=(
                    "A top-k TeacherCache is exact only at the temperature it "
                    "was built with; build the cache at the distiller's "
                    "temperature (or use top_k=None to schedule it)."
                ),
            )
            return topk_kd_divergence(
                teacher_outputs[cached_batch.TEACHER_TOP_LOGITS],
                teacher_outputs[cached_batch.TEACHER_TOP_INDICES],
                teacher_outputs[cached_batch.TEACHER_REST_LOG_MASS],
                student_logits,
                temperature,
            )
        return kd_divergence(
            teacher_outputs[cached_batch.TEACHER_LOGITS], student_logits, temperature
        )

    def _feature_loss(self, teacher_outputs, student_features, weights, global_count):
        teacher_features = teacher_outputs.get("features")
        if not teacher_features:
            raise ValueError(
                "Feature distillation needs the live teacher; cached teacher "
                "logits hold no hidden states. Received: a cached batch with "
                f"feature_layers={self.feature_layers}"
            )
        total = 0.0
        for t, s in zip(teacher_features, student_features):
            error = ops.square(ops.cast(s, "float32") - ops.cast(t, "float32"))
            position_axes = len(weights.shape)
            error = ops.mean(error, axis=list(range(position_axes, len(error.shape))))
            total = total + ops.divide_no_nan(ops.sum(error * weights), global_count)
        return total

    def _update_metrics(self, terms, y, student_logits, sample_weight):
        # Each replica's terms are its share of the global mean (its weighted
        # sum over the GLOBAL count). Dividing by the replica's share gives its
        # local mean; adding it with weight = its count of valid positions
        # makes the synced (summed) totals the global weighted mean.
        count = terms["local_count"]
        share = terms["replica_share"]
        local_loss = (
            ops.divide_no_nan(terms["weighted_loss"], share) + terms["regularization"]
        )
        self._loss_tracker.update_state(local_loss, sample_weight=count)
        for name, tracker in (
            ("student_loss", self.student_loss_tracker),
            ("distillation_loss", self.distillation_loss_tracker),
            ("feature_loss", self.feature_loss_tracker),
        ):
            if tracker is not None:
                tracker.update_state(
                    ops.divide_no_nan(terms[name], share), sample_weight=count
                )
        if sample_weight is not None or self.ignore_class is not None:
            # Weighted metrics see exactly the positions the losses count.
            sample_weight = terms["weights"]
        return self.compute_metrics(None, y, student_logits, sample_weight)


def _without_compile_config(serialized):
    """A serialized model without its `compile_config` (see `Distiller` reloads).

    The teacher's and the student's own compile state (an optimizer from
    training the teacher, or one the student was compiled with before) is not
    distillation state: the Distiller trains with its own optimizer. Kept, the
    reloaded teacher's optimizer would be rebuilt over no trainable variables
    (the teacher is frozen) and a student's unbuilt one over all of its
    variables, so Keras would warn "Skipping variable loading for optimizer
    'adam', because it has 2 variables whereas the saved optimizer has 10"
    while the Distiller's own optimizer state loads in full.
    """
    serialized = dict(serialized)
    serialized.pop("compile_config", None)
    return serialized


def _check_alpha(alpha):
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            "`alpha` (the weight of the hard loss) must be a number in "
            f"[0, 1]. Received: alpha={alpha!r}"
        )


def _check_temperature(temperature):
    if not isinstance(temperature, (int, float)) or not temperature > 0.0:
        raise ValueError(
            "`temperature` must be a number > 0. "
            f"Received: temperature={temperature!r}"
        )


def _check_models(teacher, student):
    if not isinstance(student, keras.Model):
        raise TypeError(
            f"`student` must be a keras.Model. Received: student={student!r}"
        )
    if teacher is None:
        _check_outputs_logits(student, "student")
        return
    if not isinstance(teacher, keras.Model):
        raise TypeError(
            "`teacher` must be a keras.Model (or None with a TeacherCache). "
            f"Received: teacher={teacher!r}"
        )
    if not teacher.built:
        raise ValueError(
            "The teacher must be built and trained before distillation; an "
            "unbuilt teacher has random weights. Build it by calling it on a "
            f"batch or training it. Received: teacher.built={teacher.built}"
        )
    _check_outputs_logits(teacher, "teacher")
    _check_outputs_logits(student, "student")
    teacher_shape = _output_shape(teacher)
    student_shape = _output_shape(student)
    if teacher_shape is not None and student_shape is not None:
        if (
            len(teacher_shape) != len(student_shape)
            or teacher_shape[-1] != student_shape[-1]
        ):
            raise ValueError(
                "The teacher and student must output logits of the same "
                "shape (same rank and vocabulary size). Received: "
                f"teacher output shape={teacher_shape}, "
                f"student output shape={student_shape}"
            )


def _output_shape(model):
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    return tuple(outputs[0].shape)


def _check_outputs_logits(model, role):
    layer = _output_layer(model)
    if layer is None:
        return
    activation = getattr(layer, "activation", None)
    is_softmax = isinstance(layer, keras.layers.Softmax) or activation in (
        keras.activations.softmax,
        keras.activations.log_softmax,
        keras.activations.sigmoid,
    )
    if is_softmax:
        raise ValueError(
            f"The {role} must output logits, not probabilities: remove the "
            "final softmax/sigmoid activation (e.g. `Dense(n)` instead of "
            f"`Dense(n, activation='softmax')`). Received: {role} output "
            f"layer={layer.name!r} with activation={getattr(activation, '__name__', layer.__class__.__name__)}"
        )


def _output_layer(model):
    outputs = getattr(model, "outputs", None)
    if outputs:
        history = getattr(outputs[0], "_keras_history", None)
        if history is not None:
            return history.operation
    layers = getattr(model, "layers", None)
    if isinstance(model, keras.Sequential) and layers:
        return layers[-1]
    return None


def _check_logit_shapes(teacher_logits, student_logits):
    teacher_shape = tuple(teacher_logits.shape)
    student_shape = tuple(student_logits.shape)
    if len(teacher_shape) != len(student_shape) or (
        teacher_shape[-1] is not None
        and student_shape[-1] is not None
        and teacher_shape[-1] != student_shape[-1]
    ):
        raise ValueError(
            "Teacher and student logits must have the same shape. Received: "
            f"teacher logits shape={teacher_shape}, "
            f"student logits shape={student_shape}"
        )


def _stop_gradient_keep_mask(logits):
    mask = getattr(logits, "_keras_mask", None)
    logits = ops.stop_gradient(logits)
    if mask is not None:
        logits._keras_mask = mask
    return logits


def _combine_masks(mask, other):
    if mask is None:
        return other
    if other is None:
        return mask
    return ops.logical_and(mask, other)


def _valid_weights(y, logits, sample_weight, mask, ignore_class):
    """Float32 weights, one per position (`logits.shape[:-1]`), 0 = ignored."""
    position_shape = ops.shape(logits)[:-1]
    rank = len(logits.shape) - 1
    weights = ops.ones(position_shape, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        while len(sample_weight.shape) > rank and sample_weight.shape[-1] == 1:
            sample_weight = ops.squeeze(sample_weight, -1)
        while len(sample_weight.shape) < rank:
            sample_weight = ops.expand_dims(sample_weight, -1)
        weights = weights * sample_weight
    if mask is not None:
        weights = weights * ops.cast(mask, "float32")
    if ignore_class is not None and y is not None:
        labels = ops.convert_to_tensor(y)
        if len(labels.shape) > rank:
            labels = ops.squeeze(labels, -1)
        weights = weights * ops.cast(ops.not_equal(labels, ignore_class), "float32")
    return weights


def _replace_ignored_labels(y, ignore_class):
    """Labels with `ignore_class` replaced by 0, so losses stay finite there."""
    if ignore_class is None or y is None:
        return y
    labels = ops.convert_to_tensor(y)
    return ops.where(ops.equal(labels, ignore_class), ops.zeros_like(labels), labels)


def _teacher_is_right(labels, teacher_outputs):
    """1.0 where the teacher's most likely class is the label, else 0.0."""
    if cached_batch.TEACHER_TOP_INDICES in teacher_outputs:
        # A TeacherCache stores the top-k in descending order.
        top_class = teacher_outputs[cached_batch.TEACHER_TOP_INDICES][..., 0]
    else:
        top_class = ops.argmax(teacher_outputs[cached_batch.TEACHER_LOGITS], axis=-1)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) > len(top_class.shape):
        if labels.shape[-1] == 1:
            labels = ops.squeeze(labels, -1)
        else:  # One-hot labels.
            labels = ops.argmax(labels, axis=-1)
    agree = ops.equal(ops.cast(top_class, "int32"), ops.cast(labels, "int32"))
    return ops.cast(agree, "float32")


def _has_class_labels(loss):
    names = ("sparse_categorical_crossentropy", "categorical_crossentropy")
    if isinstance(loss, tuple(_LOGIT_LOSSES[name] for name in names)):
        return True
    return getattr(loss, "__name__", "") in names


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _sum_over_replicas(value):
    """Sums a per-replica value over all replicas in sync (identity for 1)."""
    if _num_replicas() == 1:
        return value
    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _resolve_hard_loss(loss):
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(loss, str) and loss in _LOGIT_LOSSES:
        return _LOGIT_LOSSES[loss](from_logits=True)
    resolved = keras.losses.get(loss)
    if _config_value(resolved, "from_logits") is False:
        raise ValueError(
            "The student outputs logits, so the hard loss must be computed "
            "from logits, e.g. "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`. "
            f"Received: loss={loss!r} with from_logits=False"
        )
    return resolved


def _config_value(loss, key):
    if isinstance(loss, keras.losses.Loss):
        return loss.get_config().get(key)
    return None
