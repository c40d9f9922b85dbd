"""`RagPreprocessor`: raw question/answer strings to RAG model inputs."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_ragkd.rag.question_answer_preprocessor import QuestionAnswerPreprocessor

# Reduced ids of the special tokens; reduced id `i` maps back to full id
# `vocabulary_ids[i]`.
PADDING_ID, UNKNOWN_ID, START_ID, END_ID = 0, 1, 2, 3

# (RE2 pattern, rewrite) pairs that join WordPiece's space-separated words
# back around hyphens, apostrophes, punctuation and brackets.
_TIDY_RULES = (
    (r"\s*([-'])\s*", r"\1"),
    (r"\s+([,.;:)])", r"\1"),
    (r"([(])\s+", r"\1"),
)


def strip_accents(texts):
    """Removes accents in the graph ("Bogotá" → "Bogota").

    The uncased MiniLM WordPiece vocabulary does not strip accents itself and
    maps words with accented letters to `[UNK]`.
    """
    decomposed = tf_text.normalize_utf8(texts, "NFD")
    return tf.strings.regex_replace(decomposed, r"\p{Mn}", "")


def _special_ids(tokenizer):
    """WordPiece ids of `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` (reduced ids 0-3)."""
    return [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")]


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RagPreprocessor(QuestionAnswerPreprocessor):
    """Tokenises questions, answers and passages for a RAG task model.

    The WordPiece tokenizer runs in the graph (inside `tf.data`). Token ids
    are then mapped to a reduced vocabulary, the WordPiece ids that occur in
    the knowledge base and training texts (`from_texts`), so the generator's
    embedding and softmax stay small; other tokens become `[UNK]`. The first
    four reduced ids are `[PAD]`, `[UNK]`, `[CLS]` (decoder start) and `[SEP]`
    (end of answer).

    Calling the layer on `x` (strings) or `(x, y)` (question and answer
    strings) strips accents, then returns `x` as a dict `{"query", "question_token_ids"}` plus,
    when `y` is given, `"decoder_token_ids"` (`[CLS] answer`) and labels
    (`answer [SEP]`), both `(batch, answer_length)`.

    Args:
        tokenizer: a keras-hub WordPiece tokenizer (e.g.
            `keras_ragkd.models.load_minilm_tokenizer()`), ragged outputs.
        vocabulary_ids: list of WordPiece ids of the reduced vocabulary; the
            first four must be the ids of `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`.
        question_length, passage_length, answer_length, query_as_text: see
            `QuestionAnswerPreprocessor`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> tokenizer = load_minilm_tokenizer()
    >>> preprocessor = RagPreprocessor.from_texts(
    ...     tokenizer, ["The capital of France is Paris."])
    >>> x, y = preprocessor(tf.constant(["What is the capital of France?"]),
    ...                     tf.constant(["Paris"]))
    >>> preprocessor.detokenize(y).tolist()
    ['paris']
    """

    def __init__(
        self,
        tokenizer,
        vocabulary_ids,
        question_length=24,
        passage_length=32,
        answer_length=16,
        query_as_text=True,
        **kwargs,
    ):
        super().__init__(
            tokenizer, question_length, passage_length, answer_length,
            query_as_text=query_as_text, **kwargs,
        )
        vocabulary_ids = [int(i) for i in vocabulary_ids]
        if len(vocabulary_ids) < 5 or len(set(vocabulary_ids)) != len(vocabulary_ids):
            raise ValueError(
                "`vocabulary_ids` must be a list of distinct WordPiece ids "
                "starting with [PAD], [UNK], [CLS], [SEP]. Received: "
                f"vocabulary_ids={vocabulary_ids[:8]}... (len {len(vocabulary_ids)})"
            )
        self.vocabulary_ids = vocabulary_ids
        table = np.full(max(vocabulary_ids) + 2, UNKNOWN_ID, dtype="int32")
        table[vocabulary_ids] = np.arange(len(vocabulary_ids), dtype="int32")
        self._to_reduced = tf.constant(table)
        self._to_full = tf.constant(np.asarray(vocabulary_ids, dtype="int32"))

    @classmethod
    def from_texts(cls, tokenizer, texts, **kwargs):
        """Builds a preprocessor whose vocabulary covers `texts`' tokens.

        Args:
            tokenizer: keras-hub WordPiece tokenizer.
            texts: iterable of strings (passages, questions, answers).
            **kwargs: other constructor arguments.
        """
        texts = [str(text) for text in texts]
        ragged_tokens = tf.function(lambda batch: tokenizer(batch), autograph=False)
        ids = ragged_tokens(strip_accents(tf.constant(texts))).flat_values.numpy()
        specials = _special_ids(tokenizer)
        others = sorted(set(ids.tolist()) - set(specials))
        return cls(tokenizer, specials + others, **kwargs)

    @classmethod
    def from_index(cls, index, texts=(), tokenizer=None, **kwargs):
        """Builds a preprocessor whose vocabulary covers an index's passages.

        The copy generators' output vocabulary: every token of the passages'
        texts (what the generators read and copy) and of `texts`.

        Args:
            index: a `PassageIndex`.
            texts: iterable of further strings to cover (e.g. the training
                questions and answers).
            tokenizer: keras-hub WordPiece tokenizer; defaults to MiniLM's
                (`keras_ragkd.models.load_minilm_tokenizer()`).
            **kwargs: other constructor arguments.

        Example:

        >>> import numpy as np
        >>> from keras_ragkd.retrieval import PassageIndex
        >>> index = PassageIndex.from_embeddings(
        ...     [{"id": "fr", "text": "The capital of France is Paris."}], np.ones((1, 2)))
        >>> RagPreprocessor.from_index(index, ["Which city?"]).vocabulary_size
        14
        """
        if tokenizer is None:
            from keras_ragkd.models import load_minilm_tokenizer

            tokenizer = load_minilm_tokenizer()
        passages = [passage.text for passage in index.passages]
        return cls.from_texts(tokenizer, passages + [str(text) for text in texts], **kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs):
        """Builds a preprocessor over the tokenizer's whole vocabulary.

        Any knowledge base swapped in later can be read and copied from
        without `[UNK]`s, at the cost of a generator embedding and softmax of
        the full vocabulary size (30,522 for MiniLM).

        Args:
            tokenizer: keras-hub WordPiece tokenizer.
            **kwargs: other constructor arguments.

        Example:

        >>> from keras_ragkd.models import load_minilm_tokenizer
        >>> RagPreprocessor.from_tokenizer(load_minilm_tokenizer()).vocabulary_size
        30522
        """
        specials = _special_ids(tokenizer)
        others = sorted(set(range(tokenizer.vocabulary_size())) - set(specials))
        return cls(tokenizer, specials + others, **kwargs)

    @property
    def padding_id(self):
        """The padding token id of inputs and labels: the `ignore_class` of losses.

        A `Distiller` between two RAG models reads it from the student (with
        `ignore_class=None`), so padded answer positions count in neither term.
        """
        return PADDING_ID

    @property
    def start_id(self):
        """The decoder start token, `[CLS]`."""
        return START_ID

    @property
    def end_id(self):
        """The token that ends answers, `[SEP]`."""
        return END_ID

    @property
    def vocabulary_size(self):
        """Size of the reduced vocabulary."""
        return len(self.vocabulary_ids)

    def _token_ids(self, texts, length, part):
        del part  # Questions, passages and answers are tokenised alike.
        texts = strip_accents(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        ragged = self._ragged_tokens(texts)
        clipped = tf.minimum(ragged, tf.shape(self._to_reduced)[0] - 1)
        reduced = tf.ragged.map_flat_values(tf.gather, self._to_reduced, clipped)
        return reduced[:, :length]

    def detokenize_to_tensor(self, token_ids):
        """Reduced ids `(batch, time)` → `tf.string` answers `(batch,)`, TF ops only.

        Runs inside a `tf.function` or an exported SavedModel: ids are cut at
        the first `[SEP]`, padding and `[CLS]` dropped, mapped back to
        WordPiece ids and joined by the tokenizer (`##` pieces glued to their
        word), then spaces around hyphens, apostrophes and punctuation are
        tidied ("côte d ' ivoire" → "côte d'ivoire").
        """
        token_ids = tf.cast(token_ids, "int32")
        before_end = tf.equal(tf.cumsum(tf.cast(tf.equal(token_ids, END_ID), "int32"), axis=1), 0)
        keep = before_end & tf.not_equal(token_ids, PADDING_ID) & tf.not_equal(token_ids, START_ID)
        kept = tf.ragged.boolean_mask(token_ids, keep)
        full_ids = tf.ragged.map_flat_values(tf.gather, self._to_full, kept)
        texts = self.tokenizer.detokenize(full_ids)
        for pattern, rewrite in _TIDY_RULES:
            texts = tf.strings.regex_replace(texts, pattern, rewrite)
        return tf.strings.strip(texts)

    def get_config(self):
        config = super().get_config()
        config["vocabulary_ids"] = self.vocabulary_ids
        return config
