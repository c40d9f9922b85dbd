"""A Transformer encoder-decoder generator with a copy (pointer) mechanism."""

import keras
import keras_hub
import tensorflow as tf

from keras_ragkd.rag.copy_continuation import continue_copy
from keras_ragkd.rag.copy_continuation import copy_with_continuation
from keras_ragkd.rag.copy_continuation import source_matches
from keras_ragkd.rag.decoding import cached_rag_token_greedy_search
from keras_ragkd.validation import check_integer


def scatter_copy_probs(copy_probs, source_ids, vocabulary_size):
    """Adds attention over source positions into vocabulary slots.

    `out[b, t, v] = sum_s copy_probs[b, t, s] * [source_ids[b, s] == v]`,
    computed with `tf.math.unsorted_segment_sum`, so memory is
    `O(batch * time * vocab)` (the output) instead of a dense
    `(batch, source, vocab)` one-hot.

    Args:
        copy_probs: float tensor `(batch, time, source)`.
        source_ids: int tensor `(batch, source)`, ids in `[0, vocabulary_size)`.
        vocabulary_size: int.

    Returns:
        float tensor `(batch, time, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> out = scatter_copy_probs(np.array([[[0.5, 0.25, 0.25]]], "float32"),
    ...                          np.array([[2, 1, 2]]), 4)
    >>> out.numpy().tolist()
    [[[0.0, 0.25, 0.75, 0.0]]]
    """
    copy_probs = tf.convert_to_tensor(copy_probs)
    source_ids = tf.cast(source_ids, "int32")
    shape = tf.shape(copy_probs)
    batch, time, source = shape[0], shape[1], shape[2]
    rows = tf.reshape(tf.range(batch * time), [batch, time, 1])
    ids = tf.broadcast_to(source_ids[:, None, :], [batch, time, source])
    segments = rows * vocabulary_size + ids
    flat = tf.math.unsorted_segment_sum(
        tf.reshape(copy_probs, [-1]),
        tf.reshape(segments, [-1]),
        batch * time * vocabulary_size,
    )
    return tf.reshape(flat, [batch, time, vocabulary_size])


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CopyTransformerGenerator(keras.layers.Layer):
    """Seq2seq Transformer whose output mixes a softmax and a copy distribution.

    Built from keras-hub's `TokenAndPositionEmbedding`, `TransformerEncoder`
    and `TransformerDecoder`. At each decoding step a gate `p_gen` mixes the
    tied-embedding softmax over the vocabulary with a pointer distribution
    over the source tokens (See et al. 2017), so the generator can emit
    tokens it never saw as targets, e.g. the capital of a held-out country
    read from a retrieved passage. Each decoder input also receives the
    encoder state that follows that token in the source (matched by id), and
    the copy scores of the position right after where the previous token was
    copied from get a learned bonus (the gate also sees that position's
    state), which lets the decoder continue a multi-piece span and stop at
    its end.

    Inputs are a dict with `"encoder_token_ids"` `(batch, source)`,
    `"decoder_token_ids"` `(batch, time)` and optionally `"copy_mask"`
    `(batch, source)` (bool, the source positions that may be copied;
    defaults to the non-padding positions). The output is float32
    log-probabilities `(batch, time, vocabulary_size)`.

    Args:
        vocabulary_size: int, size of the (input and output) vocabulary.
        hidden_dim: int, model width.
        num_encoder_layers: int.
        num_decoder_layers: int.
        num_heads: int, attention heads.
        intermediate_dim: int, feed-forward width.
        max_sequence_length: int, longest source or target sequence.
        dropout: float.
        padding_id: int, id of padding tokens.
        source_encoder: optional layer that embeds the source instead of the
            generator's own token embedding, e.g. a pretrained
            `MiniLMReader`. Called on `(encoder_token_ids, copy_mask)`, it
            returns a dict with `"sequence_output"` `(batch, length, dim)`
            and the `"token_ids"` and `"copy_mask"` `(batch, length)` those
            states belong to (it may pack or re-order them). Its outputs are
            projected to `hidden_dim`, added to the generator's own token and
            position embedding of those `"token_ids"` (so the copy pointer
            sees each position's exact token), and go through
            `num_encoder_layers` trainable Transformer layers.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> generator = CopyTransformerGenerator(vocabulary_size=50, hidden_dim=16,
    ...     num_heads=2, intermediate_dim=32, max_sequence_length=16)
    >>> log_probs = generator({"encoder_token_ids": np.array([[5, 6, 7, 0]]),
    ...                        "decoder_token_ids": np.array([[1, 6]])})
    >>> log_probs.shape
    TensorShape([1, 2, 50])
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim=128,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        intermediate_dim=256,
        max_sequence_length=128,
        dropout=0.1,
        padding_id=0,
        source_encoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("hidden_dim", hidden_dim),
            ("num_encoder_layers", num_encoder_layers),
            ("num_decoder_layers", num_decoder_layers),
            ("num_heads", num_heads),
            ("intermediate_dim", intermediate_dim),
            ("max_sequence_length", max_sequence_length),
        ):
            check_integer(name, value)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.padding_id = padding_id
        self.source_encoder = source_encoder
        self.source_projection = None
        if source_encoder is not None:
            self.source_projection = keras.layers.Dense(
                hidden_dim, name="source_projection"
            )
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size, max_sequence_length, hidden_dim, name="embedding"
        )
        self.encoder_layers = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim, num_heads, dropout=dropout, name=f"encoder_{i}"
            )
            for i in range(num_encoder_layers)
        ]
        self.decoder_layers = [
            keras_hub.layers.TransformerDecoder(
                intermediate_dim, num_heads, dropout=dropout, name=f"decoder_{i}"
            )
            for i in range(num_decoder_layers)
        ]
        self.copy_query = keras.layers.Dense(hidden_dim, name="copy_query")
        self.copy_key = keras.layers.Dense(hidden_dim, name="copy_key")
        self.copy_gate = keras.layers.Dense(1, name="copy_gate")
        self.follow_projection = keras.layers.Dense(
            hidden_dim, use_bias=False, name="follow_projection"
        )
        self.continuation_bonus = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(2.0),
            name="continuation_bonus",
        )
        self.build()

    def build(self, input_shape=None):
        """Creates every weight (by a forward pass on a dummy batch)."""
        if self.built:
            return
        # A source of non-padding tokens, so a packing source encoder keeps it.
        source = tf.fill([1, 2], (self.padding_id + 1) % self.vocabulary_size)
        self.decode(self.encode(source), tf.zeros([1, 2], "int32"))
        self.built = True

    def encode(self, encoder_token_ids, copy_mask=None, training=None):
        """Runs the encoder once; returns the state `decode` needs.

        Args:
            encoder_token_ids: int tensor `(batch, source)`.
            copy_mask: optional bool tensor `(batch, source)`.
            training: bool.

        Returns:
            A dict of tensors with leading dimension `batch`.
        """
        encoder_token_ids = tf.cast(encoder_token_ids, "int32")
        if self.source_encoder is None:
            hidden = self.embedding(encoder_token_ids)
        else:
            source = self.source_encoder((encoder_token_ids, copy_mask), training=training)
            encoder_token_ids = tf.cast(source["token_ids"], "int32")
            # The contextual states say what a position means; the generator's
            # own token + position embedding keeps each position's identity
            # sharp for the copy pointer.
            hidden = self.source_projection(source["sequence_output"]) + self.embedding(
                encoder_token_ids
            )
            copy_mask = source["copy_mask"]
        padding_mask = tf.not_equal(encoder_token_ids, self.padding_id)
        for layer in self.encoder_layers:
            hidden = layer(hidden, padding_mask=padding_mask, training=training)
        if copy_mask is None:
            copy_mask = padding_mask
        return {
            "encoder_outputs": hidden,
            "encoder_token_ids": encoder_token_ids,
            "encoder_padding_mask": padding_mask,
            "copy_mask": tf.logical_and(tf.cast(copy_mask, "bool"), padding_mask),
        }

    def decode(self, encoded, decoder_token_ids, training=None):
        """Log-probabilities `(batch, time, vocab)` given `encode`'s state.

        Args:
            encoded: dict returned by `encode`.
            decoder_token_ids: int tensor `(batch, time)`.
            training: bool.
        """
        decoder_token_ids = tf.cast(decoder_token_ids, "int32")
        source = self._source_states(encoded)
        matches = self._source_matches(encoded, decoder_token_ids)
        hidden = self.embedding(decoder_token_ids) + self._follow_features(source, matches)
        for layer in self.decoder_layers:
            hidden = layer(
                hidden,
                encoded["encoder_outputs"],
                decoder_padding_mask=tf.not_equal(decoder_token_ids, self.padding_id),
                encoder_padding_mask=encoded["encoder_padding_mask"],
                training=training,
            )
        copy_probs, continuations = self._copy_with_continuation(
            self._copy_scores(encoded, source, hidden), matches
        )
        return self._mixed_log_probs(encoded, source, hidden, copy_probs, continuations)

    def rag_token_greedy_search(self, encoded, doc_log_probs, start_id, end_id, max_length,
                                padding_id=None):
        """Greedy RAG-Token decoding with a key/value cache.

        The same tokens and scores as `beam_search` with `num_beams=1` over
        `decode` (which decodes the whole buffer at every step), but each
        step feeds only the newest token: the decoder's self-attention keys
        and values, the cross-attention keys and values of the encoder
        states and the copy keys are computed once, and the copy
        continuation carries the previous step's copy distribution. At every
        step the `num_docs` passages' distributions are marginalised,
        `logsumexp_z(log P(z|x) + log P(y_t|x, z, y_<t))`, and the arg-max is
        fed to every passage (`decoding.cached_rag_token_greedy_search`).
        The first decoder input is `start_id`.

        Args:
            encoded: `encode` output, rows `batch * num_docs` (passages of
                one question contiguous).
            doc_log_probs: float32 `(batch, num_docs)`, `log P(z|x)`.
            start_id: int, the first decoder input.
            end_id: int, the token that ends answers.
            max_length: int, generated tokens at most.
            padding_id: int, emitted after `end_id` (default: the generator's).

        Returns:
            `(token_ids, scores)`: int32 `(batch, max_length)` and float32
            `(batch,)` summed marginal log-probabilities.

        Example:

        >>> import numpy as np
        >>> generator = CopyTransformerGenerator(vocabulary_size=50, hidden_dim=16,
        ...     num_heads=2, intermediate_dim=32, max_sequence_length=16)
        >>> encoded = generator.encode(np.array([[5, 6, 7, 0], [6, 8, 9, 0]]))
        >>> ids, scores = generator.rag_token_greedy_search(
        ...     encoded, np.log([[0.5, 0.5]]), start_id=2, end_id=3, max_length=4)
        >>> ids.shape, scores.shape
        (TensorShape([1, 4]), TensorShape([1]))
        """
        max_length = check_integer("max_length", max_length)
        padding_id = self.padding_id if padding_id is None else int(padding_id)
        outputs = encoded["encoder_outputs"]
        rows, source_length = tf.shape(outputs)[0], tf.shape(outputs)[1]
        head_dim = self.hidden_dim // self.num_heads
        layers = self.num_decoder_layers
        caches = (
            tf.zeros([rows, layers, 2, max_length, self.num_heads, head_dim], outputs.dtype),
            tf.zeros([rows, layers, 2, source_length, self.num_heads, head_dim], outputs.dtype),
        )
        source = self._source_states(encoded)

        def first_step(state):
            caches, copy_probs = state
            starts = tf.fill([rows], tf.constant(start_id, "int32"))
            log_probs, caches, copy_probs = self._cached_step(
                encoded, source, starts, 0, caches, copy_probs
            )
            return log_probs, (caches, copy_probs)

        def next_step(tokens, t, state):
            log_probs, caches, copy_probs = self._cached_step(encoded, source, tokens, t, *state)
            return log_probs, (caches, copy_probs)

        return cached_rag_token_greedy_search(
            first_step, next_step, (caches, tf.zeros([rows, source_length])), doc_log_probs,
            end_id, max_length, padding_id,
        )

    def _cached_step(self, encoded, source, token, index, caches, previous_probs):
        """One decoding step of `token` `(rows,)` at position `index`.

        At `index` 0 (a Python int) the cross-attention cache is filled from
        the encoder states; later steps read it. Returns the log-probabilities
        `(rows, vocab)`, the updated `(self, cross)` caches and the step's copy
        distribution `(rows, source)`.
        """
        token_ids = token[:, None]
        matches = self._source_matches(encoded, token_ids)
        hidden = self.embedding(token_ids, start_index=index) + self._follow_features(
            source, matches
        )
        self_caches, cross_caches = [], []
        for i, layer in enumerate(self.decoder_layers):
            hidden, self_cache, cross_cache = layer(
                hidden,
                encoded["encoder_outputs"],
                encoder_padding_mask=encoded["encoder_padding_mask"],
                self_attention_cache=caches[0][:, i],
                self_attention_cache_update_index=index,
                cross_attention_cache=caches[1][:, i],
                cross_attention_cache_update_index=0 if isinstance(index, int) else None,
            )
            self_caches.append(self_cache)
            cross_caches.append(cross_cache)
        copy_probs, continuation = continue_copy(
            previous_probs, self._copy_scores(encoded, source, hidden)[:, 0], matches[:, 0],
            self.continuation_bonus,
        )
        log_probs = self._mixed_log_probs(
            encoded, source, hidden, copy_probs[:, None], continuation[:, None]
        )
        caches = (tf.stack(self_caches, axis=1), tf.stack(cross_caches, axis=1))
        return log_probs[:, 0], caches, copy_probs

    def _source_states(self, encoded):
        """What every decoding step reads of the encoder states, computed once."""
        outputs = tf.cast(encoded["encoder_outputs"], "float32")
        return {
            "outputs": outputs,
            "next_states": tf.concat([outputs[:, 1:], tf.zeros_like(outputs[:, :1])], axis=1),
            "copy_keys": self.copy_key(encoded["encoder_outputs"]),
        }

    def _copy_scores(self, encoded, source, hidden):
        """Masked float32 copy scores `(batch, time, source)`."""
        copy_scores = tf.einsum(
            "btd,bsd->bts", self.copy_query(hidden), source["copy_keys"]
        ) / (self.hidden_dim**0.5)
        copy_mask = encoded["copy_mask"][:, None, :]
        return tf.where(copy_mask, tf.cast(copy_scores, "float32"), -1e9)

    def _mixed_log_probs(self, encoded, source, hidden, copy_probs, continuations):
        """`log(p_gen * vocabulary softmax + (1 - p_gen) * copy)`, `(batch, time, vocab)`."""
        vocab_probs = tf.nn.softmax(
            tf.cast(self.embedding.token_embedding(hidden, reverse=True), "float32")
        )
        context = tf.einsum("bts,bsd->btd", copy_probs, source["outputs"])
        next_state = tf.einsum("bts,bsd->btd", continuations, source["outputs"])
        gate = tf.sigmoid(
            tf.cast(
                self.copy_gate(tf.concat([tf.cast(hidden, "float32"), context, next_state], -1)),
                "float32",
            )
        )
        copied = scatter_copy_probs(
            copy_probs, encoded["encoder_token_ids"], self.vocabulary_size
        )
        probs = gate * vocab_probs + (1.0 - gate) * copied
        return tf.math.log(probs + 1e-9)

    def _copy_with_continuation(self, copy_scores, matches):
        """`copy_continuation.copy_with_continuation` with this generator's bonus."""
        return copy_with_continuation(copy_scores, matches, self.continuation_bonus)

    def _source_matches(self, encoded, decoder_token_ids):
        """Float `(batch, time, source)`: copyable source tokens equal to `y_t`."""
        return source_matches(decoder_token_ids, encoded["encoder_token_ids"],
                              encoded["copy_mask"])

    def _follow_features(self, source, matches):
        """What follows each decoder input token where it occurs in the source.

        For decoder token `y_t`, averages the encoder states at positions
        `s + 1` over the copyable positions `s` holding `y_t`. Matching is by
        token id, so it works for tokens the model never saw as targets: after
        copying "lu" from "lu ##anda" the decoder sees "##anda" next, and
        after the last piece of an answer it sees the "." that ends it.
        """
        matches = matches / tf.maximum(tf.reduce_sum(matches, axis=-1, keepdims=True), 1.0)
        follow = tf.einsum("bts,bsd->btd", matches, source["next_states"])
        return tf.cast(self.follow_projection(follow), self.compute_dtype)

    def call(self, inputs, training=None):
        encoded = self.encode(
            inputs["encoder_token_ids"], inputs.get("copy_mask"), training=training
        )
        return self.decode(encoded, inputs["decoder_token_ids"], training=training)

    def compute_output_spec(self, inputs, training=None):
        decoder = inputs["decoder_token_ids"]
        return keras.KerasTensor(
            (decoder.shape[0], decoder.shape[1], self.vocabulary_size), "float32"
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "num_encoder_layers": self.num_encoder_layers,
                "num_decoder_layers": self.num_decoder_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "dropout": self.dropout,
                "padding_id": self.padding_id,
                "source_encoder": keras.saving.serialize_keras_object(
                    self.source_encoder
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["source_encoder"] = keras.saving.deserialize_keras_object(
            config.get("source_encoder")
        )
        return cls(**config)
