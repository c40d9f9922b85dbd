"""`QuestionAnswerPreprocessor`: what every RAG preprocessor does with strings."""

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.validation import check_integer


class QuestionAnswerPreprocessor(keras.layers.Layer):
    """Base of the RAG preprocessors: question and answer strings to model inputs.

    Calling the layer on `x` (question strings) or `(x, y)` (questions and
    answers) returns `x` as a dict `{"query", "question_token_ids"}` plus,
    when `y` is given, `"decoder_token_ids"` (`[start_id] answer`) and labels
    (`answer [end_id]`), both `(batch, answer_length)` and padded with
    `padding_id`. `generate_preprocess`/`generate_postprocess` are the
    keras-hub names of the two ends of generation, both in the graph.

    A subclass tokenises (`_token_ids`), names its special ids (`padding_id`,
    `start_id`, `end_id`, `vocabulary_size`) and turns ids back into strings
    (`detokenize_to_tensor`); see `RagPreprocessor` (a reduced WordPiece
    vocabulary, for generators trained from scratch) and
    `CausalLMRagPreprocessor` (a pretrained causal LM's BPE and chat prompt).

    Args:
        tokenizer: a keras-hub tokenizer (ragged outputs in the graph).
        question_length: int, question tokens kept.
        passage_length: int, passage tokens kept.
        answer_length: int, decoder steps (answer tokens + 1).
        query_as_text: bool, `"query"` is the raw question (for a query
            encoder on strings such as `MiniLMEncoder`) instead of the
            question token ids.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> from keras_ragkd.models import load_minilm_tokenizer
    >>> from keras_ragkd.rag import RagPreprocessor
    >>> preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), ["Lima, Peru"])
    >>> isinstance(preprocessor, QuestionAnswerPreprocessor)
    True
    >>> inputs = preprocessor.generate_preprocess(tf.constant(["Where is Lima?"]))
    >>> sorted(inputs), inputs["question_token_ids"].shape
    (['query', 'question_token_ids'], TensorShape([1, 24]))
    """

    def __init__(self, tokenizer, question_length, passage_length, answer_length,
                 query_as_text=True, **kwargs):
        super().__init__(**kwargs)
        for name, value in (
            ("question_length", question_length),
            ("passage_length", passage_length),
            ("answer_length", answer_length),
        ):
            check_integer(name, value, minimum=2)
        self.tokenizer = tokenizer
        self.question_length = question_length
        self.passage_length = passage_length
        self.answer_length = answer_length
        self.query_as_text = bool(query_as_text)
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
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def _token_ids(self, texts, length, part):
        """Ragged int32 ids of `texts`, at most `length` each.

        `part` is `"question"`, `"passage"` or `"answer"`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `_token_ids`.")

    def tokenize_questions(self, questions):
        """Question ids `(batch, question_length)`, padded with `padding_id`."""
        ragged = self._token_ids(questions, self.question_length, "question")
        return ragged.to_tensor(self.padding_id, shape=[None, self.question_length])

    def tokenize_passages(self, texts, batch_size=256):
        """Passage ids, NumPy int32 `(len(texts), passage_length)`.

        They fill the RAG layer's `PassageTokenTable`.
        """
        texts = list(texts)
        chunks = [
            self._token_ids(texts[i : i + batch_size], self.passage_length, "passage")
            .to_tensor(self.padding_id, shape=[None, self.passage_length])
            .numpy()
            for i in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.passage_length), "int32")
        return np.concatenate(chunks, axis=0).astype("int32")

    def tokenize_answers(self, answers):
        """`(decoder_token_ids, labels)`, each `(batch, answer_length)`."""
        ragged = self._token_ids(answers, self.answer_length - 1, "answer")
        batch = ragged.nrows()
        starts = tf.fill([batch, 1], self.start_id)
        ends = tf.fill([batch, 1], self.end_id)
        shape = [None, self.answer_length]
        decoder_token_ids = tf.concat([starts, ragged], axis=1).to_tensor(
            self.padding_id, shape=shape
        )
        labels = tf.concat([ragged, ends], axis=1).to_tensor(self.padding_id, shape=shape)
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
        """Generated ids → answer strings, in the graph (keras-hub's name)."""
        return self.detokenize_to_tensor(token_ids)

    def detokenize(self, token_ids):
        """Ids `(batch, time)` → NumPy array of answer strings.

        The work is `detokenize_to_tensor`, in the graph; an undertrained
        model can end on part of a multi-byte character, which becomes "�".
        """
        token_ids = tf.convert_to_tensor(keras.ops.convert_to_numpy(token_ids), "int32")
        texts = self._detokenize_function(token_ids).numpy()
        return np.asarray([text.decode("utf-8", errors="replace") for text in texts], dtype=object)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
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
