"""`RagPreprocessor`: raw question/answer strings to RAG model inputs."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_ragkd.validation import check_integer

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
class RagPreprocessor(keras.layers.Layer):
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
        question_length: int, question tokens kept.
        passage_length: int, passage tokens kept.
        answer_length: int, decoder steps (answer tokens + 1).
        query_as_text: bool, `"query"` is the raw question (for a query
            encoder on strings such as `MiniLMEncoder`) instead of the
            question token ids.
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
        super().__init__(**kwargs)
        vocabulary_ids = [int(i) for i in vocabulary_ids]
        if len(vocabulary_ids) < 5 or len(set(vocabulary_ids)) != len(vocabulary_ids):
            raise ValueError(
                "`vocabulary_ids` must be a list of distinct WordPiece ids "
                "starting with [PAD], [UNK], [CLS], [SEP]. Received: "
                f"vocabulary_ids={vocabulary_ids[:8]}... (len {len(vocabulary_ids)})"
            )
        for name, value in (
            ("question_length", question_length),
            ("passage_length", passage_length),
            ("answer_length", answer_length),
        ):
            check_integer(name, value, minimum=2)
        self.tokenizer = tokenizer
        self.vocabulary_ids = vocabulary_ids
        self.question_length = question_length
        self.passage_length = passage_length
        self.answer_length = answer_length
        self.query_as_text = bool(query_as_text)
        table = np.full(max(vocabulary_ids) + 2, UNKNOWN_ID, dtype="int32")
        table[vocabulary_ids] = np.arange(len(vocabulary_ids), dtype="int32")
        self._to_reduced = tf.constant(table)
        self._to_full = tf.constant(np.asarray(vocabulary_ids, dtype="int32"))
        self.built = True
        # Inside a graph keras-hub tokenizers return ragged tensors (eagerly
        # they return Python lists).
        self._ragged_tokens = tf.function(
            lambda texts: self.tokenizer(texts),
            input_signature=[tf.TensorSpec([None], tf.string)],
            autograph=False,
        )
        self._detokenize_function = tf.function(
            self.detokenize_to_tensor,
            input_signature=[tf.TensorSpec([None, None], tf.int32)],
            autograph=False,
        )

    def build(self, input_shape=None):
        self.built = True

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
    def vocabulary_size(self):
        """Size of the reduced vocabulary."""
        return len(self.vocabulary_ids)

    def _token_ids(self, texts, length):
        texts = strip_accents(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        ragged = self._ragged_tokens(texts)
        clipped = tf.minimum(ragged, tf.shape(self._to_reduced)[0] - 1)
        reduced = tf.ragged.map_flat_values(tf.gather, self._to_reduced, clipped)
        return reduced[:, :length]

    def tokenize_questions(self, questions):
        """Reduced question ids `(batch, question_length)`."""
        ragged = self._token_ids(questions, self.question_length)
        return ragged.to_tensor(PADDING_ID, shape=[None, self.question_length])

    def tokenize_passages(self, texts, batch_size=256):
        """Reduced passage ids, NumPy int32 `(len(texts), passage_length)`."""
        texts = list(texts)
        chunks = [
            self._token_ids(texts[i : i + batch_size], self.passage_length)
            .to_tensor(PADDING_ID, shape=[None, self.passage_length])
            .numpy()
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(chunks, axis=0).astype("int32")

    def tokenize_answers(self, answers):
        """`(decoder_token_ids, labels)`, each `(batch, answer_length)`."""
        ragged = self._token_ids(answers, self.answer_length - 1)
        batch = ragged.nrows()
        starts = tf.fill([batch, 1], START_ID)
        ends = tf.fill([batch, 1], END_ID)
        shape = [None, self.answer_length]
        decoder_token_ids = tf.concat([starts, ragged], axis=1).to_tensor(PADDING_ID, shape=shape)
        labels = tf.concat([ragged, ends], axis=1).to_tensor(PADDING_ID, shape=shape)
        return decoder_token_ids, labels

    def call(self, x, y=None, sample_weight=None):
        questions = tf.reshape(tf.convert_to_tensor(x, tf.string), [-1])
        question_token_ids = self.tokenize_questions(questions)
        inputs = {
            "query": questions if self.query_as_text else question_token_ids,
            "question_token_ids": question_token_ids,
        }
        if y is None:
            return inputs
        decoder_token_ids, labels = self.tokenize_answers(y)
        inputs["decoder_token_ids"] = decoder_token_ids
        return keras.utils.pack_x_y_sample_weight(inputs, labels, sample_weight)

    def generate_preprocess(self, questions):
        """Question strings → the inputs `generate` decodes from (keras-hub's name)."""
        return self(questions)

    def generate_postprocess(self, token_ids):
        """Generated reduced ids → answer strings, in the graph (keras-hub's name)."""
        return self.detokenize_to_tensor(token_ids)

    def detokenize(self, token_ids):
        """Reduced ids `(batch, time)` → NumPy array of answer strings.

        Decoding stops at the first `[SEP]`; padding and `[CLS]` are dropped.
        The work is `detokenize_to_tensor`, in the graph.
        """
        token_ids = tf.convert_to_tensor(keras.ops.convert_to_numpy(token_ids), "int32")
        texts = self._detokenize_function(token_ids).numpy()
        return np.asarray([text.decode("utf-8") for text in texts], dtype=object)

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
        config.update(
            {
                "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
                "vocabulary_ids": self.vocabulary_ids,
                "question_length": self.question_length,
                "passage_length": self.passage_length,
                "answer_length": self.answer_length,
                "query_as_text": self.query_as_text,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)
