"""`CopyHead`: a pointer head that lets a causal LM copy tokens of its prompt."""

import keras
import tensorflow as tf

from keras_ragkd.rag.copy_continuation import continue_copy
from keras_ragkd.rag.copy_continuation import copy_with_continuation
from keras_ragkd.rag.copy_continuation import source_matches
from keras_ragkd.rag.copy_generator import scatter_copy_probs
from keras_ragkd.validation import check_integer
from keras_ragkd.validation import check_number

# `log` of copy probabilities below this is clipped (a token absent from the
# prompt gets `log(1 - p_gen) - 69`, i.e. no mass, and a finite gradient).
_SMALLEST_COPY_PROB = 1e-30


def log_mix(log_gate, vocabulary_log_probs, log_one_minus_gate, copy_probs):
    """`log(g · P_vocab + (1 - g) · P_copy)` computed in log space.

    Args:
        log_gate: float32 `(..., 1)`, `log g`.
        vocabulary_log_probs: float32 `(..., vocab)`, `log P_vocab`.
        log_one_minus_gate: float32 `(..., 1)`, `log(1 - g)`.
        copy_probs: float32 `(..., vocab)`, `P_copy` (zeros allowed).

    Returns:
        float32 `(..., vocab)` log-probabilities (each row sums to 1 in
        probability when both distributions do).

    Example:

    >>> import numpy as np
    >>> half = np.log([[0.5]], dtype="float32")
    >>> out = log_mix(half, np.log([[0.5, 0.5, 1e-9]], dtype="float32"), half,
    ...               np.array([[0.0, 0.0, 1.0]], "float32"))
    >>> np.round(np.exp(out.numpy()), 3).tolist()
    [[0.25, 0.25, 0.5]]
    """
    generated = log_gate + vocabulary_log_probs
    copied = log_one_minus_gate + tf.math.log(tf.maximum(copy_probs, _SMALLEST_COPY_PROB))
    larger = tf.maximum(generated, copied)
    return larger + tf.math.log1p(tf.exp(-tf.abs(generated - copied)))


def switch_loss(gate_logits, input_token_ids, answer_padding_mask, prompt_token_ids,
                prompt_padding_mask):
    """The mean binary cross-entropy of the copy switch against its labels.

    Position `t` (with decoder input `y_t`) predicts `y_{t+1}`; its label is
    "copy" (`1 - g_t` → 1) when `y_{t+1}` is a real token found among the
    copyable prompt positions, else "generate" (the answer's end, whose
    next input is padding). The last position (whose target is not among
    the inputs) and the padding positions are not counted.

    Args:
        gate_logits: float32 `(rows, time)`, the logits of `g_t` (generate).
        input_token_ids: int `(rows, time)`, the decoder inputs.
        answer_padding_mask: bool `(rows, time)`, their real positions.
        prompt_token_ids: int `(rows, prompt_length)`.
        prompt_padding_mask: bool `(rows, prompt_length)`.

    Returns:
        A float32 scalar (0 when no position counts).

    Example:

    >>> import numpy as np
    >>> loss = switch_loss(np.array([[-9.0, 9.0, 0.0]], "float32"), np.array([[1, 5, 0]]),
    ...                    np.array([[True, True, False]]), np.array([[5, 6]]),
    ...                    np.array([[True, True]]))
    >>> round(float(loss), 4)
    0.0001
    """
    real = tf.cast(answer_padding_mask, "bool")
    next_in_prompt = tf.reduce_any(
        source_matches(input_token_ids[:, 1:], prompt_token_ids, prompt_padding_mask) > 0,
        axis=-1)
    copy_labels = tf.logical_and(next_in_prompt, real[:, 1:])
    counted = tf.cast(real[:, :-1], "float32")
    values = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=1.0 - tf.cast(copy_labels, "float32"),
        logits=tf.cast(gate_logits[:, :-1], "float32"))
    return tf.math.divide_no_nan(tf.reduce_sum(values * counted), tf.reduce_sum(counted))


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CopyHead(keras.layers.Layer):
    """A pointer head over a decoder-only LM's prompt (a pointer-generator).

    At answer position `t` with final hidden state `h_t`, the head attends
    over the copyable prompt positions `j` (their final hidden states `k_j`;
    in a `CausalLMGenerator` the passage's tokens, and the question's with
    the RAG layer's `copy_from_question`),
    `a_tj = softmax_j((W_q h_t)·(W_k k_j) / √key_dim + b · c_tj)`, and mixes
    the LM's own next-token distribution with the attention scattered onto
    the prompt's tokens:

    `P(y_t = v) = g_t · softmax(logits_t)_v + (1 - g_t) · Σ_j a_tj [x_j = v]`,
    `g_t = σ(w · [h_t ; Σ_j a_tj W_k k_j ; Σ_j c_tj W_k k_j] + b_g)`.

    `c_tj` is the copy continuation (`copy_continuation.continue_copy`):
    the mass of step `t - 1`'s attention on the position before `j` whose
    token is the decoder input `y_t`, i.e. where copying the span goes on.
    The learnt bonus `b` keeps a multi-token copy in place, and the gate
    sees the token that would come next (the "." after a capital is where
    the LM head takes over and ends the answer). `continuation=False` is
    the head without it (heads saved before it existed load that way).
    Coverage (`copy_continuation`) is a learnt penalty (initialised to 5) on
    the positions already copied, so a copied span is not copied a second
    time ("Conakryry"); `coverage=False` is the head without it.

    With `gate_supervision=w > 0` the gate is also taught directly (the
    pointer softmax's switch loss, Gulcehre et al., 2016): in training, the
    head adds (`add_loss`) `w ·` the mean binary cross-entropy of `1 - g_t`
    against "the next answer token is in the prompt", over the answer
    positions (`answer_padding_mask`; the end of the answer is "generate").
    Like every `add_loss` term it is each replica's own mean and sees no
    sample weights. Without it the gate only learns from the mixture's likelihood, and a
    small LM head that has memorised the training answers takes over inside
    spans it has never seen ("Ulaanba" for "Ulaanbaatar").

    A small student can then answer with a span of the retrieved passage
    (a capital it has never generated in training, a swapped fact) instead of
    having to store every answer in its output embedding. The prompt's keys
    are computed once per prompt (`prompt_keys`), so a KV-cached decoding
    step (`step_log_probs`) costs one `(rows, prompt_length)` attention more.

    Args:
        key_dim: int, width of the copy attention's queries and keys.
        continuation: bool, whether the attention gets the continuation
            bonus (initialised to 2) and the gate the continuation's key.
        coverage: bool, whether the attention is penalised on the positions
            it already copied.
        gate_supervision: float >= 0, the weight of the gate's switch loss
            (0: none).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> head = CopyHead(key_dim=4)
    >>> prompt_hidden = np.random.default_rng(0).normal(size=(1, 3, 8)).astype("float32")
    >>> keys = head.prompt_keys(prompt_hidden)
    >>> log_probs = head.log_probs(
    ...     prompt_hidden[:, -1:], np.zeros((1, 1, 10), "float32"), keys,
    ...     prompt_token_ids=np.array([[4, 5, 6]]), prompt_padding_mask=np.array([[0, 1, 1]]),
    ...     input_token_ids=np.array([[6]]))
    >>> probs = np.exp(log_probs.numpy()[0, 0])
    >>> bool(np.isclose(probs.sum(), 1.0)), bool(probs[6] > probs[4])
    (True, True)
    """

    def __init__(self, key_dim=64, continuation=True, coverage=True, gate_supervision=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.key_dim = check_integer("key_dim", key_dim, minimum=1)
        self.gate_supervision = check_number("gate_supervision", gate_supervision, low=0)
        for name, value in (("continuation", continuation), ("coverage", coverage)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
        self.continuation = continuation
        self.coverage = coverage
        self.query_dense = keras.layers.Dense(key_dim, use_bias=False, name="query",
                                              dtype=self.dtype_policy)
        self.key_dense = keras.layers.Dense(key_dim, use_bias=False, name="key",
                                            dtype=self.dtype_policy)
        self.gate_dense = keras.layers.Dense(1, name="gate", dtype="float32")

    def build(self, hidden_shape):
        hidden_dim = hidden_shape[-1]
        self.query_dense.build([None, None, hidden_dim])
        self.key_dense.build([None, None, hidden_dim])
        contexts = 2 if self.continuation else 1
        self.gate_dense.build([None, None, hidden_dim + contexts * self.key_dim])
        if self.continuation:
            self.continuation_bonus = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(2.0),
                name="continuation_bonus", dtype="float32")
        if self.coverage:
            self.coverage_penalty = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(5.0),
                name="coverage_penalty", dtype="float32")
        self.built = True

    def initial_copy_state(self, rows, prompt_length):
        """The `step_log_probs` state before the first answer token (zeros).

        Float32 `(rows, 2, prompt_length)`: the previous step's copy
        attention and the coverage (the attention summed over the steps).
        """
        return tf.zeros([rows, 2, prompt_length], "float32")

    def prompt_keys(self, prompt_hidden):
        """The copy keys of the prompt positions, `(rows, prompt_length, key_dim)`."""
        if not self.built:
            self.build(prompt_hidden.shape)
        return self.key_dense(prompt_hidden)

    def log_probs(self, hidden, logits, keys, prompt_token_ids, prompt_padding_mask,
                  input_token_ids=None, answer_padding_mask=None, training=None):
        """Mixed next-token log-probabilities, float32 `(rows, time, vocab)`.

        For a teacher-forced answer: position `t`'s continuation follows
        from position `t - 1`'s attention (a scan over time).

        Args:
            hidden: `(rows, time, hidden_dim)`, the final hidden states of
                the positions whose next token is predicted.
            logits: `(rows, time, vocab)`, the LM head's logits there.
            keys: `prompt_keys` of the rows' prompts.
            prompt_token_ids: int `(rows, prompt_length)`, what copying emits.
            prompt_padding_mask: bool `(rows, prompt_length)`, the positions
                that can be copied.
            input_token_ids: int `(rows, time)`, the token at each position
                of `hidden` (the answer's inputs; position 0's is the
                prompt's last token). Needed with `continuation` and with
                `gate_supervision`.
            answer_padding_mask: bool `(rows, time)`, the real positions of
                `input_token_ids` (needed with `gate_supervision`).
            training: bool, whether the switch loss is added.
        """
        supervised = bool(training) and self.gate_supervision > 0
        if (self.continuation or supervised) and input_token_ids is None:
            raise ValueError(
                "A `CopyHead` with `continuation=True` or `gate_supervision` needs the "
                "tokens of the positions it predicts from. Received: input_token_ids=None"
            )
        scores = self._scores(hidden, keys, prompt_padding_mask)
        if self.continuation or self.coverage:
            matches = (source_matches(input_token_ids, prompt_token_ids, prompt_padding_mask)
                       if self.continuation else tf.zeros_like(scores))
            attention, continuation = copy_with_continuation(
                scores, matches, self._bonus(), self._penalty())
        else:
            attention, continuation = tf.nn.softmax(scores, axis=-1), None
        log_probs, gate = self._mix(hidden, logits, keys, prompt_token_ids, attention,
                                    continuation if self.continuation else None)
        if supervised:
            self.add_loss(self.gate_supervision * switch_loss(
                gate[..., 0], input_token_ids, answer_padding_mask, prompt_token_ids,
                prompt_padding_mask))
        return log_probs

    def step_log_probs(self, hidden, logits, keys, prompt_token_ids, prompt_padding_mask,
                       input_token_ids, copy_state):
        """One cached decoding step: `(log_probs, copy_state)`.

        Args:
            hidden: `(rows, 1, hidden_dim)`, the newest position's state.
            logits: `(rows, 1, vocab)`, the LM head's logits there.
            keys, prompt_token_ids, prompt_padding_mask: as in `log_probs`.
            input_token_ids: int `(rows,)`, the newest position's token.
            copy_state: float32 `(rows, 2, prompt_length)`, the step
                before's state (`initial_copy_state` at the first step).

        Returns:
            float32 `(rows, 1, vocab)` log-probabilities and this step's
            copy state, for the next step.
        """
        scores = self._scores(hidden, keys, prompt_padding_mask)[:, 0]
        previous_attention, coverage = copy_state[:, 0], copy_state[:, 1]
        matched = (source_matches(input_token_ids[:, None], prompt_token_ids,
                                  prompt_padding_mask)[:, 0]
                   if self.continuation else tf.zeros_like(scores))
        attention, continuation = continue_copy(
            previous_attention, scores, matched, self._bonus(), coverage, self._penalty())
        log_probs, _ = self._mix(hidden, logits, keys, prompt_token_ids, attention[:, None],
                                 continuation[:, None] if self.continuation else None)
        return log_probs, tf.stack([attention, coverage + attention], axis=1)

    def _bonus(self):
        return self.continuation_bonus if self.continuation else 0.0

    def _penalty(self):
        return self.coverage_penalty if self.coverage else None

    def _scores(self, hidden, keys, prompt_padding_mask):
        """Masked float32 copy scores `(rows, time, prompt_length)`."""
        if not self.built:
            self.build(hidden.shape)
        scores = tf.einsum("btd,bsd->bts", tf.cast(self.query_dense(hidden), "float32"),
                           tf.cast(keys, "float32")) / (self.key_dim**0.5)
        copyable = tf.cast(prompt_padding_mask, "bool")[:, None, :]
        return tf.where(copyable, scores, -1e9)

    def _mix(self, hidden, logits, keys, prompt_token_ids, attention, continuation):
        """`(log_probs, gate logits)`: the gate's mix of the LM head and the copy."""
        keys = tf.cast(keys, "float32")
        contexts = [tf.cast(hidden, "float32"), tf.einsum("bts,bsd->btd", attention, keys)]
        if continuation is not None:
            contexts.append(tf.einsum("bts,bsd->btd", continuation, keys))
        gate = tf.cast(self.gate_dense(tf.concat(contexts, axis=-1)), "float32")
        copied = scatter_copy_probs(attention, prompt_token_ids, tf.shape(logits)[-1])
        log_probs = log_mix(tf.math.log_sigmoid(gate),
                            tf.nn.log_softmax(tf.cast(logits, "float32"), axis=-1),
                            tf.math.log_sigmoid(-gate), copied)
        return log_probs, gate

    def get_config(self):
        config = super().get_config()
        config.update({"key_dim": self.key_dim, "continuation": self.continuation,
                       "coverage": self.coverage, "gate_supervision": self.gate_supervision})
        return config

    @classmethod
    def from_config(cls, config):
        # Heads saved before the continuation (or coverage) existed had none.
        return cls(**{"continuation": False, "coverage": False, **config})
