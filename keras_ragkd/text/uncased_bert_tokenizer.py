"""Uncased BERT WordPiece as Hugging Face tokenises it, with TensorFlow ops only."""

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.utils.tensor_utils import preprocessing_function

# Hugging Face's `BertNormalizer(clean_text=True)` drops NUL, U+FFFD and the
# "other" characters (Cc but tab/newline/return, Cf, Co); RE2 has no `\p{Cn}`.
_CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Co}\x{FFFD}]"
# ... then maps the remaining White_Space characters to " " (RE2's `\s` is
# ASCII only: a no-break or ideographic space would glue words together).
_SPACE = r"[\t\n\r\p{Z}]"
# `handle_chinese_chars`: BERT's CJK ideograph blocks become words of their own.
_CJK = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
# `BertPreTokenizer`: ASCII symbols and Unicode punctuation are words.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
# WordPiece's `max_input_chars_per_word`: longer words are the unknown token.
MAX_CHARS_PER_WORD = 100


def normalize_uncased(texts):
    """Hugging Face's uncased `BertNormalizer`, in the graph.

    Drops control and format characters, maps Unicode spaces to `" "`, puts
    spaces around CJK ideographs, decomposes (NFD), drops non-spacing marks
    (accents) and lower-cases character by character. Unlike keras-hub's
    NFKC case folding this keeps ligatures, superscripts and Hangul jamo as
    the uncased BERT vocabulary has them (`"ﬁ"`, `"²"`).

    Args:
        texts: string tensor (UTF-8).

    Returns:
        A string tensor of the same shape.

    Example:

    >>> import tensorflow as tf
    >>> normalize_uncased(tf.constant(["Côte\\u00a0d'Ivoire\\u200b ²"])).numpy()[0].decode()
    "cote d'ivoire ²"
    """
    texts = tf.strings.regex_replace(texts, _CONTROL, "")
    texts = tf.strings.regex_replace(texts, _SPACE, " ")
    texts = tf.strings.regex_replace(texts, _CJK, r" \0 ")
    texts = tf_text.normalize_utf8(texts, "NFD")
    texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
    # ICU lower-cases a word-final capital sigma to "ς"; Hugging Face maps
    # one character at a time, to "σ".
    texts = tf.strings.regex_replace(texts, "Σ", "σ")
    return tf.strings.lower(texts, encoding="utf-8")


def split_words(texts, oov_token="[UNK]"):
    """Splits normalised texts into BERT words, as `BertPreTokenizer` does.

    Words longer than `MAX_CHARS_PER_WORD` characters become `oov_token`.

    Args:
        texts: 1-D string tensor, already normalised.
        oov_token: str, the unknown token.

    Returns:
        A `tf.RaggedTensor` `(batch, None)` of words.

    Example:

    >>> import tensorflow as tf
    >>> words = split_words(tf.constant(["it's 10:30"]))
    >>> [w.decode() for w in words[0].numpy()]
    ['it', "'", 's', '10', ':', '30']
    """
    words = tf_text.regex_split(texts, r" |" + _PUNCTUATION, _PUNCTUATION)
    too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
    return words.with_flat_values(tf.where(too_long, oov_token, words.flat_values))


@keras.saving.register_keras_serializable(package="keras_ragkd")
class UncasedBertTokenizer(keras_hub.tokenizers.BertTokenizer):
    """A keras-hub `BertTokenizer` that splits text as Hugging Face's uncased BERT.

    keras-hub's `BertTokenizer(lowercase=True, strip_accents=True)` differs
    from Hugging Face's on real text: it splits on ASCII whitespace only (a
    no-break space glues two words into `[UNK]`), keeps control and format
    characters inside words, case-folds with NFKC (`"ﬁ"` -> `"fi"`, `"²"` ->
    `"2"`, Hangul recomposed into `[UNK]`), limits words to 100 bytes rather
    than 100 characters, and tokenises eager calls with Python code that
    follows other rules. This subclass normalises with `normalize_uncased`,
    splits with `split_words` and runs WordPiece in the graph for every call
    (eager, `tf.data`, exported SavedModels); WordPiece itself, the special
    tokens and detokenisation are keras-hub's.

    Args:
        vocabulary: list of WordPiece tokens (or a file path, one a line).
        sequence_length: int or `None`. If set, outputs are dense and padded
            with 0 or truncated to this length; if `None`, ragged.
        **kwargs: passed to `keras_hub.tokenizers.BertTokenizer` (`dtype`,
            `name`, ...). Its `lowercase`, `strip_accents` and `split` are
            fixed by this class.

    Example:

    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ...               "paris", "is", "in", "france", "."]
    >>> tokenizer = UncasedBertTokenizer(vocabulary)
    >>> tokenizer(["Paris\\u00a0is in FRANCE."])
    [[5, 6, 7, 8, 9]]
    """

    def __init__(self, vocabulary=None, sequence_length=None, **kwargs):
        for fixed in ("lowercase", "strip_accents", "split"):
            kwargs.pop(fixed, None)  # In the config of a saved tokenizer.
        super().__init__(
            vocabulary=vocabulary,
            sequence_length=sequence_length,
            lowercase=False,
            strip_accents=False,
            split=False,
            _allow_python_workflow=False,
            **kwargs,
        )

    def _set_vocabulary_tf(self):
        # keras-hub's, but with a byte limit that lets every word of at most
        # `MAX_CHARS_PER_WORD` characters through (`split_words` applies the
        # character limit).
        self._fast_word_piece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary,
            token_out_type=self.compute_dtype,
            suffix_indicator=self.suffix_indicator,
            unknown_token=self.oov_token,
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            no_pretokenization=True,
            support_detokenization=True,
        )

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        self._maybe_initialized_tf()
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = inputs[None]
        if inputs.shape.rank != 1:
            raise ValueError(
                "`UncasedBertTokenizer` expects a string or a 1-D batch of "
                f"strings. Received: inputs.shape={inputs.shape}"
            )
        words = split_words(normalize_uncased(inputs), self.oov_token)
        tokens = self._fast_word_piece.tokenize(words).merge_dims(-2, -1)
        if self.sequence_length:
            tokens = tokens.to_tensor(shape=[None, self.sequence_length])
        return tokens[0] if unbatched else tokens
