"""`CopyHead`: a pointer head that lets a causal LM copy tokens of its prompt."""

import keras
import tensorflow as tf

from keras_ragkd.rag.copy_generator import scatter_copy_probs
from keras_ragkd.validation import check_integer

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


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CopyHead(keras.layers.Layer):
    """A pointer head over a decoder-only LM's prompt (a pointer-generator).

    At answer position `t` with final hidden state `h_t`, the head attends
    over the prompt positions `j` (their final hidden states `k_j`, padding
    masked), `a_tj = softmax_j((W_q h_t)·(W_k k_j) / √key_dim)`, and mixes the
    LM's own next-token distribution with the attention scattered onto the
    prompt's tokens:

    `P(y_t = v) = g_t · softmax(logits_t)_v + (1 - g_t) · Σ_j a_tj [x_j = v]`,
    `g_t = σ(w · [h_t ; Σ_j a_tj W_k k_j] + b)`.

    A small student can then answer with a span of the retrieved passage
    (a capital it has never generated in training, a swapped fact) instead of
    having to store every answer in its output embedding. The prompt's keys
    are computed once per prompt (`prompt_keys`), so a KV-cached decoding
    step costs one `(rows, prompt_length)` attention more.

    Args:
        key_dim: int, width of the copy attention's queries and keys.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> head = CopyHead(key_dim=4)
    >>> prompt_hidden = np.random.default_rng(0).normal(size=(1, 3, 8)).astype("float32")
    >>> keys = head.prompt_keys(prompt_hidden)
    >>> log_probs = head.log_probs(
    ...     prompt_hidden[:, -1:], np.zeros((1, 1, 10), "float32"), keys,
    ...     prompt_token_ids=np.array([[4, 5, 6]]), prompt_padding_mask=np.array([[0, 1, 1]]))
    >>> probs = np.exp(log_probs.numpy()[0, 0])
    >>> bool(np.isclose(probs.sum(), 1.0)), bool(probs[6] > probs[4])
    (True, True)
    """

    def __init__(self, key_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = check_integer("key_dim", key_dim, minimum=1)
        self.query_dense = keras.layers.Dense(key_dim, use_bias=False, name="query",
                                              dtype=self.dtype_policy)
        self.key_dense = keras.layers.Dense(key_dim, use_bias=False, name="key",
                                            dtype=self.dtype_policy)
        self.gate_dense = keras.layers.Dense(1, name="gate", dtype="float32")

    def build(self, hidden_shape):
        hidden_dim = hidden_shape[-1]
        self.query_dense.build([None, None, hidden_dim])
        self.key_dense.build([None, None, hidden_dim])
        self.gate_dense.build([None, None, hidden_dim + self.key_dim])
        self.built = True

    def prompt_keys(self, prompt_hidden):
        """The copy keys of the prompt positions, `(rows, prompt_length, key_dim)`."""
        if not self.built:
            self.build(prompt_hidden.shape)
        return self.key_dense(prompt_hidden)

    def log_probs(self, hidden, logits, keys, prompt_token_ids, prompt_padding_mask):
        """Mixed next-token log-probabilities, float32 `(rows, time, vocab)`.

        Args:
            hidden: `(rows, time, hidden_dim)`, the final hidden states of
                the positions whose next token is predicted.
            logits: `(rows, time, vocab)`, the LM head's logits there.
            keys: `prompt_keys` of the rows' prompts.
            prompt_token_ids: int `(rows, prompt_length)`, what copying emits.
            prompt_padding_mask: bool `(rows, prompt_length)`, the positions
                that can be copied.
        """
        if not self.built:
            self.build(hidden.shape)
        scores = tf.einsum("btd,bsd->bts", tf.cast(self.query_dense(hidden), "float32"),
                           tf.cast(keys, "float32")) / (self.key_dim**0.5)
        copyable = tf.cast(prompt_padding_mask, "bool")[:, None, :]
        attention = tf.nn.softmax(tf.where(copyable, scores, -1e9), axis=-1)
        context = tf.einsum("bts,bsd->btd", attention, tf.cast(keys, "float32"))
        gate = self.gate_dense(tf.concat([tf.cast(hidden, "float32"), context], axis=-1))
        gate = tf.cast(gate, "float32")
        copied = scatter_copy_probs(attention, prompt_token_ids, tf.shape(logits)[-1])
        return log_mix(tf.math.log_sigmoid(gate),
                       tf.nn.log_softmax(tf.cast(logits, "float32"), axis=-1),
                       tf.math.log_sigmoid(-gate), copied)

    def get_config(self):
        config = super().get_config()
        config.update({"key_dim": self.key_dim})
        return config
