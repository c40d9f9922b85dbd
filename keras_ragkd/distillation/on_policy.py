"""On-policy distillation (GKD's λ): some batches answer with the student's own outputs."""

import math

import keras
import numpy as np

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation import top_k_tail
from keras_ragkd.validation import check_number


def on_policy_schedule(num_batches, fraction):
    """Which of `num_batches` batches are on-policy: exactly `round(fraction * n)`, spread out.

    Batch `i` is on-policy when `floor((i + 1) λ + ½) > floor(i λ + ½)`, so
    every prefix of the schedule holds its share of on-policy batches to
    within one (no run of off-policy batches longer than `1 / λ`).

    Args:
        num_batches: int ≥ 0.
        fraction: float in `[0, 1]`, GKD's λ.

    Returns:
        A list of `num_batches` bools.

    Example:

    >>> on_policy_schedule(8, 0.25)
    [False, True, False, False, False, True, False, False]
    >>> sum(on_policy_schedule(10, 0.3))
    3
    """
    check_number("fraction", fraction, 0, 1)
    return [
        math.floor((i + 1) * fraction + 0.5) > math.floor(i * fraction + 0.5)
        for i in range(num_batches)
    ]


class OnPolicyBatches(keras.utils.PyDataset):
    """Distillation batches of which a fraction λ carry the student's own answers.

    Generalised knowledge distillation (GKD, Agarwal et al. 2024) trains the
    student partly on its own outputs: in a fraction `fraction` of the
    batches the answers are the ones the student generates now (its greedy
    `generate`, RAG-Token decoding over its retrieved passages), and the live
    teacher scores every position of them, so the student learns what the
    teacher would say after the student's own prefixes rather than only after
    the reference's. The other batches use the reference answers, scored by
    the same teacher, or come ready from `off_policy` (e.g. a
    `TeacherCache`'s attached dataset, so only the on-policy batches run the
    teacher). Which batches are on-policy is `on_policy_schedule`'s (exactly
    `round(λ · len(self))` per epoch).

    Batches have `TeacherCache.attach`'s structure, `(x, {"labels": y,
    "teacher_logits": t})`, so a `Distiller(None, student, ...)` fits on
    them. In on-policy batches `labels` are the teacher's most likely tokens
    along the student's answer (padding kept): a hard loss then pulls the
    student towards the teacher's choice, not towards its own sample.

    Both models read the student's preprocessing (`student.preprocessor`):
    they must share a tokenizer, as a RAG teacher and student distilled
    token for token do.

    Args:
        student: a `RagQuestionAnswerer` (e.g. `CausalLMRagQuestionAnswerer`)
            with `generate` and `preprocessor`.
        teacher: a Keras model on the student's preprocessed inputs returning
            `(batch, time, vocab)` logits or log-probabilities (e.g. a RAG
            teacher's marginal).
        questions: list of question strings.
        answers: list of reference answer strings, one per question.
        fraction: float in `[0, 1]`, GKD's λ.
        batch_size: int, questions per batch (the last, smaller batch is
            dropped, so every batch has one shape).
        shuffle_seed: int or `None`. Reshuffle the questions every epoch with
            this seed; `None` keeps their order.
        off_policy: optional iterable of ready distillation batches `(x,
            y_dict)` (e.g. `cache.attach(dataset)`), read in order, and again
            from the start when exhausted, for the off-policy batches. The
            on-policy batches then take its label keys and dtypes.
        top_k: int or `None`. Give the teacher's on-policy outputs as its
            top-k logits plus the tail mass, as a top-k `TeacherCache` does
            (needed to mix with such a cache's batches).
        temperature: the temperature of the tail mass with `top_k`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Example:

    >>> questions = [f"Question {i}?" for i in range(8)]
    >>> batches = OnPolicyBatches(student=None, teacher=None, questions=questions,
    ...                           answers=["A"] * 8, fraction=0.25, batch_size=2)
    >>> len(batches), [batches.is_on_policy(i) for i in range(len(batches))]
    (4, [False, True, False, False])

    With a student and a teacher, `Distiller(None, student,
    alpha=0.1).fit(batches, epochs=2)` trains on them (the models are only
    called when a batch is built).
    """

    def __init__(self, student, teacher, questions, answers, fraction, batch_size,
                 shuffle_seed=None, off_policy=None, top_k=None, temperature=None,
                 **kwargs):
        super().__init__(**kwargs)
        check_number("fraction", fraction, 0, 1)
        questions, answers = list(questions), list(answers)
        if len(questions) != len(answers) or len(questions) < batch_size:
            raise ValueError(
                "Expected one answer per question and at least `batch_size` "
                f"({batch_size}) questions. Received: len(questions)={len(questions)}, "
                f"len(answers)={len(answers)}"
            )
        self.student = student
        self.teacher = teacher
        self.questions = questions
        self.answers = answers
        self.fraction = float(fraction)
        self.batch_size = int(batch_size)
        self.shuffle_seed = shuffle_seed
        if top_k is not None and temperature is None:
            raise ValueError(
                "`top_k` keeps the tail mass at a temperature: pass `temperature` "
                f"(the cache's). Received: top_k={top_k!r}, temperature=None"
            )
        self.top_k = top_k
        self.temperature = temperature
        self.off_policy = off_policy
        self._off_policy_batches = None
        self._template = None  # The labels of an off-policy batch.
        self.schedule = on_policy_schedule(len(self), self.fraction)
        self.order = np.arange(len(questions))
        self.epoch = 0
        # `(batch index, on-policy)` of every batch built, in order. Keras
        # builds the first batches once more before training, to read
        # their structure.
        self.built = []

    def __len__(self):
        return len(self.questions) // self.batch_size

    def is_on_policy(self, index):
        """Whether batch `index` of an epoch answers with the student's outputs."""
        return self.schedule[index]

    def __getitem__(self, index):
        on_policy = self.is_on_policy(index)
        self.built.append((int(index), on_policy))
        if not on_policy and self.off_policy is not None:
            return self._next_off_policy()
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        questions = [self.questions[i] for i in rows]
        if on_policy:
            answers = self.student.generate(questions, batch_size=len(questions))
        else:
            answers = [self.answers[i] for i in rows]
        x, labels = self.student.preprocessor(np.asarray(questions), np.asarray(answers))
        teacher_logits = keras.ops.convert_to_numpy(self.teacher(x, training=False))
        labels = keras.ops.convert_to_numpy(labels)
        if on_policy:
            padding = self.student.preprocessor.padding_id
            labels = np.where(labels == padding, padding,
                              teacher_logits.argmax(-1)).astype(labels.dtype)
        # `x` stays as TensorFlow tensors: Keras reads no spec from NumPy
        # object arrays, and a text query encoder's inputs are strings.
        y = {cached_batch.LABELS: labels, **self._teacher_fields(teacher_logits)}
        return x, self._like_off_policy(y)

    def _teacher_fields(self, logits):
        if self.top_k is None:
            return {cached_batch.TEACHER_LOGITS: logits.astype("float32")}
        top, indices, rest = top_k_tail.from_logits(logits, self.top_k, self.temperature)
        return {
            cached_batch.TEACHER_TOP_LOGITS: keras.ops.convert_to_numpy(top),
            cached_batch.TEACHER_TOP_INDICES: keras.ops.convert_to_numpy(indices),
            cached_batch.TEACHER_REST_LOG_MASS: keras.ops.convert_to_numpy(rest),
        }

    def _next_off_policy(self):
        if self._off_policy_batches is None:
            self._off_policy_batches = _batches(self.off_policy)
        try:
            batch = next(self._off_policy_batches)
        except StopIteration:
            self._off_policy_batches = _batches(self.off_policy)
            batch = next(self._off_policy_batches)
        self._template = batch[1]
        return batch[0], batch[1]

    def _like_off_policy(self, y):
        """`y` with the keys and dtypes of the off-policy batches' labels."""
        if self.off_policy is None:
            return y
        if self._template is None:
            self._template = next(_batches(self.off_policy))[1]
        template = self._template
        missing = sorted(set(template) - set(y) - {cached_batch.CACHE_TEMPERATURE})
        if missing:
            raise ValueError(
                "The on-policy batches must carry what the off-policy batches do "
                "(for a top-k cache, pass its `top_k` and `temperature`). "
                f"Received: missing={missing}"
            )
        return {key: np.asarray(y.get(key, template[key])).astype(
                    np.asarray(template[key]).dtype)
                for key in template}

    @property
    def on_policy_share(self):
        """The share of the batches built so far that were on-policy."""
        return float(np.mean([on for _, on in self.built])) if self.built else 0.0

    def on_epoch_end(self):
        self.epoch += 1
        if self.shuffle_seed is not None:
            rng = np.random.default_rng([self.shuffle_seed, self.epoch])
            self.order = rng.permutation(len(self.questions))


def _batches(batches):
    """An iterator of `(x, y)` over a `tf.data.Dataset` (tensors) or an iterable."""
    for batch in batches:
        yield batch[0], batch[1]
