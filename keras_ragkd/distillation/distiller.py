"""`Distiller`: a Keras model that trains a student against a frozen teacher."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation import keras_compat
from keras_ragkd.distillation import losses
from keras_ragkd.distillation import model_checks
from keras_ragkd.distillation.hard_loss import config_value
from keras_ragkd.distillation.hard_loss import hard_loss_values
from keras_ragkd.distillation.hard_loss import has_class_labels
from keras_ragkd.distillation.hard_loss import resolve_hard_loss
from keras_ragkd.distillation.keras_compat import FeatureDistillation
from keras_ragkd.distillation.position_weights import combine_masks
from keras_ragkd.distillation.position_weights import replace_ignored_labels
from keras_ragkd.distillation.position_weights import stop_gradient_keep_mask
from keras_ragkd.distillation.position_weights import teacher_is_right
from keras_ragkd.distillation.position_weights import valid_weights
from keras_ragkd.distillation.position_weights import weighted_mean
from keras_ragkd.distillation.replicas import num_replicas
from keras_ragkd.distillation.replicas import sum_over_replicas
from keras_ragkd.distribute import MultiWorkerFitMixin
from keras_ragkd.pipelines import is_raw_text
from keras_ragkd.pipelines import preprocessed_dataset


@keras.saving.register_keras_serializable(package="keras_ragkd")
class Distiller(MultiWorkerFitMixin, keras.Model):
    """Trains a student model to match a frozen teacher (knowledge distillation).

    The training loss is `α · L_hard + (1 − α) · L_soft`, where `L_hard` is the
    compiled loss of the student on the true labels and `L_soft` a
    distillation loss of the teacher's and the student's outputs at
    temperature `T`, by default the forward KL
    `T² · KL(softmax(t / T) ‖ softmax(s / T))`, computed in float32. Other
    losses (`ReverseKL`, `GeneralizedJSD`, `TopKTailKL`, see
    `keras_ragkd.distillation.losses`) plug in as `distillation_loss`. Every
    term honours `sample_weight`, Keras masks (e.g. from
    `Embedding(mask_zero=True)`) and an ignored label class, and averages over
    the valid examples or tokens of the global batch, so one replica and a
    `tf.distribute` strategy give the same loss and the same update.

    Outputs are logits, or log-probabilities when a model says so: a model
    with `output_kind = "log_probabilities"` (RAG-Token marginals of a
    `RagQuestionAnswerer`) is read as such, or pass `teacher_outputs=` /
    `student_outputs="log_probabilities"`. Both give the same tempered
    distributions; a final softmax (probabilities) is refused. Padding comes
    from the model too: without an `ignore_class`, the compiled loss's or
    else the student's (or teacher's) `padding_id` (on the model or its
    `preprocessor`) is ignored.

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
    state and its distillation losses, so training continues where it
    stopped; the teacher and the student come back as models that are not
    compiled (their own optimizers, e.g. from training the teacher, are not
    distillation state and are not restored).

    Training can also run from a `TeacherCache` instead of a live teacher:
    pass `teacher=None` (or any teacher, which is then not run) and fit on
    `cache.attach(dataset)`. Every distillation loss reads a top-k cache
    through its `k + 1` buckets (top-k tokens and the tail).

    Code written for `keras.distillation.Distiller` runs unchanged with this
    class: it also takes `distillation_losses` (one or a list of
    `LogitsDistillation`, `FeatureDistillation` or our losses),
    `distillation_loss_weights` and `student_loss_weight` (`= alpha`); the
    total is then `α · L_hard + (1 − α) · Σ wᵢ · Lᵢ`, with this class's
    numerics (softmax and `T²`), and is logged as `loss`.

    Args:
        teacher: a built Keras model that outputs logits `(batch, vocab)` or
            `(batch, time, vocab)`, or `None` to train only from cached teacher
            logits.
        student: a Keras model with the same output shape as the teacher.
        alpha: weight in `[0, 1]` of the hard (label) loss. Defaults to 0.5.
        temperature: softmax temperature `T > 0` of the soft loss (of every
            distillation loss that has no temperature of its own).
        ignore_class: optional label value that marks padding: such positions
            count in no term. Defaults to the compiled loss's `ignore_class`,
            else the student's (or teacher's) `padding_id`, if any.
        feature_layers: optional list of `(teacher_layer_name,
            student_layer_name)` pairs for hidden-state distillation (both
            models must be functional). A trainable `Dense` projection maps
            the student features to the teacher's width when they differ.
        feature_weight: weight of the mean-squared feature loss (added to
            the total, outside the `1 − α` of the soft term).
        mask_teacher_errors: if `True`, the soft loss counts only the
            positions (examples, or tokens of sequences) where the teacher's
            most likely class is the label, so the student never learns the
            teacher's mistakes; the hard loss still counts every position,
            and the soft term keeps its denominator (it is zero, not missing,
            where the teacher is wrong). Needs class-index or one-hot labels.
        distillation_loss: the soft loss: a `DistillationLoss` or a name
            (`"forward_kl"`, the default, `"reverse_kl"`, `"jsd"`,
            `"top_k_tail_kl"`).
        teacher_outputs: `"auto"` (the teacher's `output_kind`, else
            logits), `"logits"` or `"log_probabilities"`.
        student_outputs: the same for the student.
        distillation_losses: Keras' argument: one or a list of distillation
            losses (instead of `distillation_loss`).
        distillation_loss_weights: Keras' argument: a weight per loss of
            `distillation_losses` (default 1 each).
        student_loss_weight: Keras' name of `alpha`.
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
    >>> Distiller(teacher, student, distillation_loss="jsd").distillation_losses
    [GeneralizedJSD(beta=0.5, temperature=None)]
    """

    def __init__(
        self,
        teacher,
        student,
        alpha=None,
        temperature=3.0,
        ignore_class=None,
        feature_layers=None,
        feature_weight=1.0,
        mask_teacher_errors=False,
        distillation_loss=None,
        teacher_outputs="auto",
        student_outputs="auto",
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "distiller")
        super().__init__(**kwargs)
        alpha = keras_compat.hard_loss_weight(alpha, student_loss_weight)
        model_checks.check_alpha(alpha)
        losses.check_temperature(temperature)
        self.teacher_outputs = teacher_outputs
        self.student_outputs = student_outputs
        self.teacher_output_kind = model_checks.output_kind(teacher, teacher_outputs, "teacher")
        self.student_output_kind = model_checks.output_kind(student, student_outputs, "student")
        model_checks.check_models(
            teacher, student, self.teacher_output_kind, self.student_output_kind
        )
        if teacher is not None:
            teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.ignore_class = ignore_class
        terms, weights = keras_compat.distillation_terms(
            distillation_loss, distillation_losses, distillation_loss_weights
        )
        self.distillation_losses = terms
        self.distillation_loss_weights = weights
        for term in terms:
            if isinstance(term, FeatureDistillation) and teacher is not None:
                term.validate_model_compatibility(teacher, student)
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
        self._teacher_feature_extractor = None
        self._student_feature_extractor = None
        if self._feature_pairs():
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
        model_checks.check_alpha(float(value))
        self._alpha.assign(value)

    @property
    def student_loss_weight(self):
        """`keras.distillation`'s name of `alpha`, as a Python float.

        The shortest decimal of the float32 value (`0.7`, not `0.699999988`).
        """
        return float(str(np.float32(float(self._alpha.value))))

    @property
    def temperature(self):
        """The softmax temperature, a non-trainable float32 variable."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        losses.check_temperature(float(value))
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
                student outputs logits (or log-probabilities, the same to a
                cross-entropy from logits).
            metrics: metrics of the student's outputs, as in `Model.compile`.
            **kwargs: other `Model.compile` arguments (`weighted_metrics`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        self._hard_loss = resolve_hard_loss(loss)
        if self.mask_teacher_errors and not has_class_labels(self._hard_loss):
            raise ValueError(
                "`mask_teacher_errors=True` compares the teacher's most likely "
                "class with the label, so it needs class-index or one-hot "
                "labels (a sparse or categorical cross-entropy). "
                f"Received: loss={loss!r}"
            )
        if self.ignore_class is None:
            self.ignore_class = self._declared_padding(self._hard_loss)
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
                "teacher_outputs": self.teacher_outputs,
                "student_outputs": self.student_outputs,
                "distillation_losses": [
                    keras.saving.serialize_keras_object(term)
                    for term in self.distillation_losses
                ],
                "distillation_loss_weights": list(self.distillation_loss_weights),
                "student_loss_weight": self._initial_alpha,
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

    def _declared_padding(self, hard_loss):
        """The compiled loss's `ignore_class`, else the models' `padding_id`."""
        for value in (
            config_value(hard_loss, "ignore_class"),
            model_checks.padding_id(self.student),
            model_checks.padding_id(self.teacher),
        ):
            if value is not None:
                return value
        return None

    def _logit_losses(self):
        return [
            (term, weight)
            for term, weight in zip(self.distillation_losses, self.distillation_loss_weights)
            if not isinstance(term, FeatureDistillation)
        ]

    def _feature_pairs(self):
        """Native `feature_layers` pairs, then those of `FeatureDistillation` terms."""
        pairs = list(self.feature_layers)
        for term in self.distillation_losses:
            if isinstance(term, FeatureDistillation):
                pairs.append((term.teacher_layer_name, term.student_layer_name))
        return pairs

    def _feature_distillation_weights(self):
        return [
            weight
            for term, weight in zip(self.distillation_losses, self.distillation_loss_weights)
            if isinstance(term, FeatureDistillation)
        ]

    def _build_feature_extractors(self):
        for model, role in ((self.teacher, "teacher"), (self.student, "student")):
            if model is None or getattr(model, "inputs", None) is None:
                raise ValueError(
                    "Feature distillation needs functional (or Sequential) "
                    f"teacher and student models. Received: {role}={model!r}"
                )
        pairs = self._feature_pairs()
        teacher_features = [self.teacher.get_layer(t).output for t, _ in pairs]
        student_features = [self.student.get_layer(s).output for _, s in pairs]
        # Extractors share the models' layers; setting them with
        # object.__setattr__ keeps Keras from tracking (and saving) the same
        # variables twice.
        object.__setattr__(
            self,
            "_teacher_feature_extractor",
            keras.Model(self.teacher.inputs, [self.teacher.outputs[0]] + teacher_features),
        )
        object.__setattr__(
            self,
            "_student_feature_extractor",
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
        if self._teacher_feature_extractor is not None:
            logits, *features = self._teacher_feature_extractor(x, training=False)
        else:
            logits, features = self.teacher(x, training=False), []
        logits = stop_gradient_keep_mask(logits)
        features = [ops.stop_gradient(f) for f in features]
        return {cached_batch.TEACHER_LOGITS: logits, "features": features}

    def _run_student(self, x, training):
        if self._student_feature_extractor is not None:
            logits, *features = self._student_feature_extractor(x, training=training)
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
            losses.check_same_vocabulary(teacher_logits.shape, student_logits.shape)
            mask = combine_masks(mask, getattr(teacher_logits, "_keras_mask", None))
        student_logits = ops.cast(student_logits, "float32")
        weights = valid_weights(y, student_logits, sample_weight, mask, self.ignore_class)
        local_count = ops.sum(weights)
        global_count = sum_over_replicas(local_count)
        labels = replace_ignored_labels(y, self.ignore_class)
        hard = weighted_mean(
            hard_loss_values(self._hard_loss, labels, student_logits), weights, global_count
        )
        soft = self._soft_loss(labels, teacher_outputs, student_logits, weights, global_count)
        features = self._feature_losses(teacher_outputs, student_features, weights, global_count)
        native = features[: len(self.feature_layers)]
        for value, weight in zip(
            features[len(self.feature_layers):], self._feature_distillation_weights()
        ):
            soft = soft + weight * value
        alpha = ops.convert_to_tensor(self._alpha)
        loss = alpha * hard + (1.0 - alpha) * soft
        terms = {"student_loss": hard, "distillation_loss": soft}
        if self.feature_layers:
            feature = sum(native[1:], native[0])
            loss = loss + self.feature_weight * feature
            terms["feature_loss"] = feature
        terms["weighted_loss"] = loss
        regularization = ops.zeros((), "float32")
        if self.student.losses:
            regularization = ops.sum(
                ops.stack([ops.cast(l, "float32") for l in self.student.losses])
            )
        terms["regularization"] = regularization
        terms["loss"] = loss + regularization / num_replicas()
        terms["local_count"] = local_count
        terms["weights"] = weights
        terms["replica_share"] = ops.divide_no_nan(local_count, global_count)
        return terms

    def _soft_loss(self, labels, teacher_outputs, student_logits, weights, global_count):
        """`Σ wᵢ · Lᵢ` over the distillation losses of the outputs."""
        right = None
        if self.mask_teacher_errors:
            right = teacher_is_right(labels, teacher_outputs)
        temperature = ops.convert_to_tensor(self._temperature)
        soft = ops.zeros((), "float32")
        for term, weight in self._logit_losses():
            values = term.per_position(teacher_outputs, student_logits, temperature)
            if right is not None:
                values = values * right
            soft = soft + weight * weighted_mean(values, weights, global_count)
        return soft

    def _feature_losses(self, teacher_outputs, student_features, weights, global_count):
        """The mean squared error of each feature pair, over the valid positions."""
        if not student_features:
            return []
        teacher_features = teacher_outputs.get("features")
        if not teacher_features:
            raise ValueError(
                "Feature distillation needs the live teacher; cached teacher "
                "logits hold no hidden states. Received: a cached batch with "
                f"feature layers={self._feature_pairs()}"
            )
        values = []
        position_axes = len(weights.shape)
        for t, s in zip(teacher_features, student_features):
            error = ops.square(ops.cast(s, "float32") - ops.cast(t, "float32"))
            error = ops.mean(error, axis=list(range(position_axes, len(error.shape))))
            values.append(weighted_mean(error, weights, global_count))
        return values

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
