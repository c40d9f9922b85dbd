"""`CausalLMRagPreprocessor`: raw question/answer strings to decoder-only RAG inputs."""

import types

import keras
import tensorflow as tf

from keras_ragkd.models.chat_template import IM_END
from keras_ragkd.models.chat_template import IM_START
from keras_ragkd.models.chat_template import ChatTemplate
from keras_ragkd.rag.question_answer_preprocessor import QuestionAnswerPreprocessor

DEFAULT_USER_TEMPLATE = "Context: {passage}\nQuestion: {question}"


def _split_user_template(user_template):
    """`"A {passage} B {question} C"` → `("A", "B", "C")`, checked."""
    if not isinstance(user_template, str) or (
        user_template.count("{passage}") != 1 or user_template.count("{question}") != 1
    ) or user_template.index("{passage}") > user_template.index("{question}"):
        raise ValueError(
            "`user_template` must contain `{passage}` once, then `{question}` once. "
            f"Received: user_template={user_template!r}"
        )
    before, rest = user_template.split("{passage}")
    middle, after = rest.split("{question}")
    return before, middle, after


@keras.saving.register_keras_serializable(package="keras_ragkd")
class CausalLMRagPreprocessor(QuestionAnswerPreprocessor):
    """Tokenises questions, answers and passages for a decoder-only RAG model.

    The generator of a decoder-only RAG model (`CausalLMGenerator`) reads, per
    retrieved passage, the chat prompt

    ```
    <|im_start|>user
    Context: {passage}
    Question: {question}<|im_end|>
    <|im_start|>assistant
    ```

    (an optional system turn first) followed by the answer and `<|im_end|>`.
    The passage is only known after retrieval, inside the model, so this
    layer tokenises the pieces separately: the fixed text around the slots
    (`prompt_pieces`, token ids stored in the generator), the question
    (`"question_token_ids"`) and every passage of the knowledge base
    (`tokenize_passages`, the RAG layer's `PassageTokenTable`). Pieces are cut where the
    byte-level pre-tokenizer cuts anyway (a slot's leading space moves into
    the slot, as GPT-2 attaches spaces to the next word), so the assembled
    ids equal those of tokenising the whole prompt at once.

    Calling the layer on `x` (question strings) or `(x, y)` (questions and
    answers) returns `x` as a dict `{"query", "question_token_ids"}` plus,
    when `y` is given, `"decoder_token_ids"` (`[start_id] answer`) and labels
    (`answer <|im_end|>`), both `(batch, answer_length)` and padded with
    `padding_id`. `start_id` is the prompt's last token; the generator reads
    the prompt in its place, so the decoder convention is that of
    `RagPreprocessor` and RAG decoding works unchanged.

    Args:
        tokenizer: a keras-hub byte-level BPE tokenizer of the llama family
            (e.g. `keras_ragkd.models.ByteLevelLlama3Tokenizer`, or
            `causal_lm.preprocessor.tokenizer`) with `<|im_start|>` and
            `<|im_end|>` tokens; its `end_token_id` ends answers.
        question_length, passage_length, answer_length, query_as_text: see
            `QuestionAnswerPreprocessor`.
        system_prompt: str or `None`, a system turn before every prompt.
        user_template: str, the user turn, with `{passage}` then `{question}`.
        answer_leading_space: bool. `True` tokenises answers as `" " + answer`,
            as the words stand inside a passage ("is Luanda." holds
            `ĠLu anda`, a bare "Luanda" is `L u anda`), so that a pointer into
            the prompt (`CopyHead`) can produce every answer token; decoded
            answers are stripped either way. The default `False` tokenises
            answers as chat models write them after `assistant\n`; a teacher
            and the student distilled from its cache must agree on it.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf, smollm2_gguf_path
    >>> preprocessor = CausalLMRagPreprocessor(
    ...     llama3_tokenizer_from_gguf(smollm2_gguf_path()))
    >>> x, y = preprocessor(tf.constant(["What is the capital of France?"]),
    ...                     tf.constant(["Paris"]))
    >>> preprocessor.detokenize(y).tolist(), sorted(x)
    (['Paris'], ['decoder_token_ids', 'query', 'question_token_ids'])
    """

    def __init__(
        self,
        tokenizer,
        question_length=32,
        passage_length=64,
        answer_length=16,
        query_as_text=True,
        system_prompt=None,
        user_template=DEFAULT_USER_TEMPLATE,
        answer_leading_space=False,
        **kwargs,
    ):
        super().__init__(
            tokenizer, question_length, passage_length, answer_length,
            query_as_text=query_as_text, **kwargs,
        )
        self.system_prompt = system_prompt or None
        self.user_template = user_template
        self.answer_leading_space = bool(answer_leading_space)
        before, middle, after = _split_user_template(user_template)
        # A space before a slot belongs to the slot's first word.
        self._leading_space = {
            "question": middle.endswith(" "),
            "passage": before.endswith(" "),
            "answer": self.answer_leading_space,
        }
        # Token ids of the fixed prompt text, computed on first use: when a
        # saved model is loaded the tokenizer gets its vocabulary after this
        # constructor runs.
        self._cache = types.SimpleNamespace(pieces=None)

    def _prompt_pieces(self):
        if self._cache.pieces is not None:
            return self._cache.pieces
        for token in (IM_START, IM_END):
            if self.tokenizer.token_to_id(token) is None:
                raise ValueError(
                    f"The tokenizer must have the ChatML token {token!r}. "
                    f"Received: tokenizer={self.tokenizer!r}"
                )
        before, middle, after = _split_user_template(self.user_template)
        head, tail = ChatTemplate(system_prompt=self.system_prompt)("\x00").split("\x00")
        texts = [
            head + (before[:-1] if self._leading_space["passage"] else before),
            middle[:-1] if self._leading_space["question"] else middle,
            after + tail,
        ]
        with tf.init_scope():  # Eagerly, even on first use inside a tf.function.
            pieces = self._ragged_tokens(tf.constant(texts)).to_list()
        self._cache.pieces = {
            "prefix_ids": [int(i) for i in pieces[0]],
            "middle_ids": [int(i) for i in pieces[1]],
            "suffix_ids": [int(i) for i in pieces[2]],
        }
        return self._cache.pieces

    def _special_ids(self):
        tokens = getattr(self.tokenizer, "special_tokens", None) or []
        ids = {int(self.tokenizer.token_to_id(t)) for t in tokens
               if self.tokenizer.token_to_id(t) is not None}
        return tf.constant(sorted(ids | {self.padding_id, self.end_id}), "int32")

    @property
    def prompt_pieces(self):
        """Token ids of the fixed prompt text around the passage and question.

        A dict `{"prefix_ids", "middle_ids", "suffix_ids"}` of int lists: the
        prompt is `prefix + passage + middle + question + suffix`; pass it to
        `CausalLMGenerator(backbone, **preprocessor.prompt_pieces, ...)`.
        """
        return {key: list(value) for key, value in self._prompt_pieces().items()}

    @property
    def padding_id(self):
        """The padding token id of inputs and labels: the `ignore_class` of losses."""
        return int(self.tokenizer.pad_token_id)

    @property
    def end_id(self):
        """The token that ends answers (`<|im_end|>` for ChatML models)."""
        return int(self.tokenizer.end_token_id)

    @property
    def start_id(self):
        """The decoder start token: the prompt's last token (read from the prompt)."""
        return self._prompt_pieces()["suffix_ids"][-1]

    @property
    def vocabulary_size(self):
        """The tokenizer's (and so the generator's) vocabulary size."""
        return int(self.tokenizer.vocabulary_size())

    def format_prompt(self, question, passage):
        """The prompt as one string (for reading, and to check the token ids)."""
        user = self.user_template.format(passage=passage.strip(), question=question.strip())
        return ChatTemplate(system_prompt=self.system_prompt)(user)

    def _token_ids(self, texts, length, part):
        texts = tf.strings.strip(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        if self._leading_space[part]:
            texts = tf.strings.join([" ", texts])
        ragged = self._ragged_tokens(texts)
        return tf.cast(ragged[:, :length], "int32")

    def detokenize_to_tensor(self, token_ids):
        """Ids `(batch, time)` → `tf.string` answers `(batch,)`, TF ops only.

        Ids are cut at the first `end_id`; padding and special tokens are
        dropped; the text is stripped.
        """
        token_ids = tf.cast(token_ids, "int32")
        ended = tf.cumsum(tf.cast(tf.equal(token_ids, self.end_id), "int32"), axis=1)
        special = tf.reduce_any(
            tf.equal(token_ids[:, :, None], self._special_ids()[None, None, :]), axis=-1
        )
        keep = tf.equal(ended, 0) & tf.logical_not(special)
        kept = tf.ragged.boolean_mask(token_ids, keep)
        texts = self.tokenizer.detokenize(kept)
        return tf.strings.strip(texts)

    def get_config(self):
        config = super().get_config()
        config.update({
            "system_prompt": self.system_prompt,
            "user_template": self.user_template,
            "answer_leading_space": self.answer_leading_space,
        })
        return config
