"""`CausalLMGenerator`: a keras-hub decoder-only LM as the generator of a RAG layer."""

import keras
import tensorflow as tf

from keras_ragkd.rag.copy_head import CopyHead
from keras_ragkd.rag.decoding import cached_rag_token_greedy_search
from keras_ragkd.validation import check_integer

# Cached decoding left-pads prompts to a multiple of this many tokens. On CPU
# the key/value cache update (`keras.ops.slice_update`, TF's
# `XlaDynamicUpdateSlice`) is compiled on demand for every new cache shape:
# measured on 2 cores, a 4-layer student paid ~40 ms at each prompt length it
# had not seen, twice its whole cached answer (~20 ms). Buckets bound the
# shapes; the padding is masked, and RoPE attention depends on relative
# positions only, so the answers do not change.
PROMPT_LENGTH_MULTIPLE = 16


def _int_list(values, name):
    try:
        values = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a list of token ids. Received: {name}={values!r}"
        ) from None
    return values


def _pad_to_multiple(ids, mask, multiple, padding_id):
    """Left-pads `(rows, length)` ids and their mask to a multiple of `multiple`."""
    extra = -tf.shape(ids)[1] % multiple
    return (tf.pad(ids, [[0, 0], [extra, 0]], constant_values=padding_id),
            tf.pad(mask, [[0, 0], [extra, 0]], constant_values=False))


def left_pad(ragged, padding_id):
    """Ragged ids `(rows, None)` → left-padded `(ids, mask)`, both `(rows, max_length)`.

    TF ops only (runs in `tf.data`, `tf.function` and SavedModels).

    Example:

    >>> ids, mask = left_pad(tf.ragged.constant([[1, 2, 3], [4]]), 0)
    >>> ids.numpy().tolist()
    [[1, 2, 3], [0, 0, 4]]
    """
    lengths = tf.cast(ragged.row_lengths(), "int32")
    width = tf.maximum(tf.reduce_max(tf.concat([lengths, [0]], axis=0)), 0)
    right = ragged.to_tensor(padding_id, shape=[None, None])
    right = tf.pad(right, [[0, 0], [0, width - tf.shape(right)[1]]],
                   constant_values=padding_id)
    source = tf.range(width)[None, :] - (width - lengths)[:, None]
    mask = source >= 0
    ids = tf.gather(right, tf.maximum(source, 0), batch_dims=1)
    return tf.where(mask, ids, padding_id), mask


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CausalLMGenerator(keras.layers.Layer):
    """A keras-hub decoder-only backbone (llama family) as a RAG generator.

    For every retrieved passage the backbone reads the chat prompt
    `prefix + passage + middle + question + suffix` (fixed pieces from
    `CausalLMRagPreprocessor.prompt_pieces`; the passage and question ids are
    compacted, their padding dropped, with ragged TF ops) followed by the
    answer, and the logits are read at the answer positions only. Prompts
    are left-padded to a common length, so every answer token sits at the
    same position in all rows (RoPE attends by relative position, so the
    padding changes nothing but rounding) and cached decoding advances all
    passages of a batch in step.

    Used by `RetrievalAugmentedGenerator` through:

    - `encode_prompts(question_token_ids, passage_token_ids)` → the encoded
      context `{"prompt_token_ids", "prompt_padding_mask"}`, rows
      `batch * num_docs`;
    - `decode(encoded, decoder_token_ids)` → logits `(rows, time, vocab)`
      where `decoder_token_ids` is `[start, y_0, ..., y_{T-2}]` (the start
      token is replaced by the prompt) and output `t` predicts `y_t`;
    - `rag_token_greedy_search(...)`: greedy RAG-Token decoding with the
      backbone's KV cache (`call_with_cache`, as `Llama3CausalLM`).

    Args:
        backbone: a `keras_hub.models.Llama3Backbone` (or another llama-family
            backbone with `token_embedding`, `transformer_layers`,
            `layer_norm`).
        prefix_ids: ids of the prompt text before the passage.
        middle_ids: ids between the passage and the question.
        suffix_ids: ids after the question (the assistant turn's opening).
        padding_id: int, the padding id of the question and passage ids.
        copy_head: optional `CopyHead` (or its `key_dim`, an int): the
            answer tokens' distribution then mixes the LM head with copies of
            the prompt's tokens, and `decode` returns log-probabilities.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import keras_hub, numpy as np
    >>> backbone = keras_hub.models.Llama3Backbone(
    ...     vocabulary_size=16, num_layers=1, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=8, intermediate_dim=16)
    >>> generator = CausalLMGenerator(backbone, prefix_ids=[1], middle_ids=[2],
    ...                               suffix_ids=[3, 4])
    >>> encoded = generator.encode_prompts(np.array([[5, 6, 0]]),
    ...                                    np.array([[[7, 0], [8, 9]]]))
    >>> encoded["prompt_token_ids"].numpy().tolist()
    [[0, 1, 7, 2, 5, 6, 3, 4], [1, 8, 9, 2, 5, 6, 3, 4]]
    >>> generator.decode(encoded, np.array([[4, 10], [4, 10]])).shape
    TensorShape([2, 2, 16])
    """

    def __init__(self, backbone, prefix_ids=(), middle_ids=(), suffix_ids=(),
                 padding_id=0, copy_head=None, **kwargs):
        super().__init__(**kwargs)
        for name in ("token_embedding", "transformer_layers", "layer_norm"):
            if not hasattr(backbone, name):
                raise ValueError(
                    "`backbone` must be a keras-hub decoder-only backbone of the "
                    f"llama family (it has no `{name}`). Received: backbone={backbone!r}"
                )
        self.backbone = backbone
        self.prefix_ids = _int_list(prefix_ids, "prefix_ids")
        self.middle_ids = _int_list(middle_ids, "middle_ids")
        self.suffix_ids = _int_list(suffix_ids, "suffix_ids")
        if not self.suffix_ids:
            raise ValueError(
                "`suffix_ids` must not be empty: the logits of the prompt's last "
                f"token predict the first answer token. Received: suffix_ids={suffix_ids!r}"
            )
        self.padding_id = int(padding_id)
        if copy_head is not None and not isinstance(copy_head, CopyHead):
            copy_head = CopyHead(key_dim=copy_head, name="copy_head")
        self.copy_head = copy_head
        if copy_head is not None and not copy_head.built:
            copy_head.build([None, None, backbone.hidden_dim])
        self.built = True

    @property
    def vocabulary_size(self):
        return int(self.backbone.vocabulary_size)

    @classmethod
    def from_preprocessor(cls, backbone, preprocessor, **kwargs):
        """A generator over `backbone` reading `preprocessor`'s prompts."""
        if hasattr(backbone, "backbone"):  # A keras-hub CausalLM task.
            backbone = backbone.backbone
        if int(backbone.vocabulary_size) != preprocessor.vocabulary_size:
            raise ValueError(
                "The backbone and the preprocessor's tokenizer must have the same "
                f"vocabulary. Received: backbone.vocabulary_size={backbone.vocabulary_size}, "
                f"preprocessor.vocabulary_size={preprocessor.vocabulary_size}"
            )
        return cls(backbone, padding_id=preprocessor.padding_id,
                   **dict(preprocessor.prompt_pieces, **kwargs))

    def _constant_piece(self, ids, rows):
        piece = tf.tile(tf.constant(ids, "int32", shape=[1, len(ids)]), [rows, 1])
        return tf.RaggedTensor.from_tensor(piece)

    def encode_prompts(self, question_token_ids, passage_token_ids, training=None,
                       copy_from_question=False):
        """Left-padded prompts, one per (question, passage) pair.

        Args:
            question_token_ids: int `(batch, question_length)`.
            passage_token_ids: int `(batch, num_docs, passage_length)`.
            training: unused (the prompts are token ids).
            copy_from_question: bool, whether the `"copy_mask"` takes in the
                question's tokens besides the passage's.

        Returns:
            `{"prompt_token_ids": int32, "prompt_padding_mask": bool,
            "copy_mask": bool}`, all `(batch * num_docs, prompt_length)`,
            passages of one question contiguous. `"copy_mask"` marks what a
            `CopyHead` may copy: the passage's tokens (and the question's
            with `copy_from_question`), never the chat template's.
        """
        passage_token_ids = tf.cast(passage_token_ids, "int32")
        num_docs = tf.shape(passage_token_ids)[1]
        questions = tf.repeat(tf.cast(question_token_ids, "int32"), num_docs, axis=0)
        passages = tf.reshape(passage_token_ids, [-1, tf.shape(passage_token_ids)[-1]])
        rows = tf.shape(passages)[0]
        # (piece, whether a copy head may copy it), in prompt order.
        pieces = [
            (self._constant_piece(self.prefix_ids, rows), False),
            (tf.ragged.boolean_mask(passages, tf.not_equal(passages, self.padding_id)), True),
            (self._constant_piece(self.middle_ids, rows), False),
            (tf.ragged.boolean_mask(questions, tf.not_equal(questions, self.padding_id)),
             bool(copy_from_question)),
            (self._constant_piece(self.suffix_ids, rows), False),
        ]
        ids, mask = left_pad(tf.concat([piece for piece, _ in pieces], axis=1), self.padding_id)
        copyable = tf.concat([tf.ones_like(piece) * int(can_copy) for piece, can_copy in pieces],
                             axis=1)
        copy_mask, _ = left_pad(copyable, 0)
        return {"prompt_token_ids": ids, "prompt_padding_mask": mask,
                "copy_mask": tf.cast(copy_mask, "bool")}

    def decode(self, encoded, decoder_token_ids, training=None):
        """Logits of the answer tokens, `(rows, time, vocab)`.

        `decoder_token_ids` is `[start, y_0, ..., y_{T-2}]`; output `t` is
        the backbone's logits of `y_t` after `prompt + y_<t`.
        """
        prompt = encoded["prompt_token_ids"]
        decoder_token_ids = tf.cast(decoder_token_ids, "int32")
        answer_inputs = decoder_token_ids[:, 1:]
        token_ids = tf.concat([prompt, answer_inputs], axis=1)
        padding_mask = tf.concat(
            [encoded["prompt_padding_mask"], tf.ones_like(answer_inputs, "bool")], axis=1
        )
        sequence = self.backbone(
            {"token_ids": token_ids, "padding_mask": padding_mask}, training=training
        )
        prompt_length = tf.shape(prompt)[1]
        hidden = sequence[:, prompt_length - 1 : prompt_length - 1 + tf.shape(decoder_token_ids)[1]]
        logits = self.backbone.token_embedding(hidden, reverse=True)
        if self.copy_head is None:
            return logits
        keys = self.copy_head.prompt_keys(sequence[:, :prompt_length])
        # Position 0 holds the start token (the prompt's last), always real.
        answer_padding_mask = tf.concat(
            [tf.ones_like(decoder_token_ids[:, :1], "bool"),
             tf.not_equal(answer_inputs, self.padding_id)], axis=1)
        return self.copy_head.log_probs(hidden, logits, keys, prompt, encoded["copy_mask"],
                                        input_token_ids=decoder_token_ids,
                                        answer_padding_mask=answer_padding_mask,
                                        training=training)

    def call(self, inputs, training=None):
        encoded = self.encode_prompts(
            inputs["question_token_ids"], inputs["passage_token_ids"], training=training
        )
        return self.decode(encoded, inputs["decoder_token_ids"], training=training)

    def _call_with_cache(self, token_ids, cache, cache_update_index, attention_mask):
        """`Llama3CausalLM.call_with_cache` with a key mask (left padding).

        Returns `(logits, cache, hidden)`: the last position's logits, the
        updated cache and the final hidden states of all `token_ids`.
        """
        backbone = self.backbone
        x = backbone.token_embedding(token_ids)
        length = tf.shape(token_ids)[1]
        mask = tf.broadcast_to(
            tf.cast(attention_mask, "int32")[:, None, :],
            [tf.shape(token_ids)[0], length, tf.shape(attention_mask)[1]],
        )
        updated = []
        for i, layer in enumerate(backbone.transformer_layers):
            x, layer_cache = layer(
                x,
                decoder_attention_mask=mask,
                self_attention_cache=cache[:, i, ...],
                self_attention_cache_update_index=cache_update_index,
            )
            updated.append(layer_cache)
        hidden = backbone.layer_norm(x)
        logits = backbone.token_embedding(hidden[:, -1:], reverse=True)
        return logits, tf.stack(updated, axis=1), hidden

    def rag_token_greedy_search(self, encoded, doc_log_probs, start_id, end_id, max_length,
                                padding_id=None):
        """Greedy RAG-Token decoding with a KV cache.

        At every step the next-token distributions of all `num_docs` passages
        are marginalised, `log P(y_t|x, y_<t) = logsumexp_z(log P(z|x) +
        log P(y_t|x, z, y_<t))`, and the arg-max is fed to every passage.
        One prefill of the prompts (left-padded to a multiple of
        `PROMPT_LENGTH_MULTIPLE` tokens), then one cached step per token
        (`decoding.cached_rag_token_greedy_search`).

        Args:
            encoded: `encode_prompts` output, rows `batch * num_docs`.
            doc_log_probs: float32 `(batch, num_docs)`, `log P(z|x)`.
            start_id: int, the prompt's last token, which the prompts
                already end with (the decoder convention of the RAG layer).
            end_id: int, the token that ends answers.
            max_length: int, generated tokens at most.
            padding_id: int, emitted after `end_id` (default: the generator's).

        Returns:
            `(token_ids, scores)`: int32 `(batch, max_length)` and float32
            `(batch,)` summed marginal log-probabilities.
        """
        del start_id  # Every prompt ends with it.
        max_length = check_integer("max_length", max_length)
        padding_id = self.padding_id if padding_id is None else int(padding_id)
        backbone = self.backbone
        prompt, prompt_mask = _pad_to_multiple(
            encoded["prompt_token_ids"], encoded["prompt_padding_mask"],
            PROMPT_LENGTH_MULTIPLE, padding_id)
        _, copy_mask = _pad_to_multiple(encoded["prompt_token_ids"], encoded["copy_mask"],
                                        PROMPT_LENGTH_MULTIPLE, padding_id)
        rows = tf.shape(prompt)[0]
        prompt_length = tf.shape(prompt)[1]
        total = prompt_length + max_length
        key_mask = tf.concat([prompt_mask, tf.ones([rows, max_length], "bool")], axis=1)
        head_dim = backbone.hidden_dim // backbone.num_query_heads
        cache = tf.zeros(
            [rows, backbone.num_layers, 2, total, backbone.num_key_value_heads, head_dim],
            backbone.compute_dtype,
        )

        def next_token_logits(logits, hidden, keys, tokens, copy_state):
            """Float32 `(rows, vocab)` (log-probabilities with a copy head), copy state."""
            if self.copy_head is not None:
                logits, copy_state = self.copy_head.step_log_probs(
                    hidden[:, -1:], logits, keys, prompt, copy_mask, tokens, copy_state)
            return tf.cast(logits[:, 0], "float32"), copy_state

        no_copy = (tf.zeros([rows, 0], "float32") if self.copy_head is None
                   else self.copy_head.initial_copy_state(rows, prompt_length))

        def first_step(state):
            logits, cache, hidden = self._call_with_cache(prompt, state[0], 0, key_mask)
            keys = () if self.copy_head is None else self.copy_head.prompt_keys(hidden)
            logits, copy_state = next_token_logits(logits, hidden, keys, prompt[:, -1], no_copy)
            return logits, (cache, keys, copy_state)

        def next_step(tokens, t, state):
            cache, keys, copy_state = state
            logits, cache, hidden = self._call_with_cache(
                tokens[:, None], cache, prompt_length + t - 1, key_mask)
            logits, copy_state = next_token_logits(logits, hidden, keys, tokens, copy_state)
            return logits, (cache, keys, copy_state)

        return cached_rag_token_greedy_search(
            first_step, next_step, (cache, (), no_copy), doc_log_probs, end_id, max_length,
            padding_id
        )

    def get_config(self):
        config = super().get_config()
        backbone = keras.saving.serialize_keras_object(self.backbone)
        # keras-hub 0.32's `LlamaBackbone.get_config` leaves out
        # `tie_word_embeddings`, so a tied backbone (SmolLM2) would come back
        # untied and fail to load its weights.
        tied = getattr(self.backbone, "tie_word_embeddings", None)
        if tied is not None and isinstance(backbone.get("config"), dict):
            backbone["config"].setdefault("tie_word_embeddings", bool(tied))
        config.update(
            {
                "backbone": backbone,
                "prefix_ids": self.prefix_ids,
                "middle_ids": self.middle_ids,
                "suffix_ids": self.suffix_ids,
                "padding_id": self.padding_id,
                "copy_head": None if self.copy_head is None
                else keras.saving.serialize_keras_object(self.copy_head),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("copy_head"), dict):
            config["copy_head"] = keras.saving.deserialize_keras_object(config["copy_head"])
        return cls(**config)
