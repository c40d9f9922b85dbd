"""A keras-hub Llama3Tokenizer with the GPT-2 byte-level pre-tokenizer, in-graph."""

import re

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.utils.tensor_utils import preprocessing_function
from tokenizers import pre_tokenizers

# Unicode White_Space, as Hugging Face's and Python's `\s` mean it. RE2's
# `\s` is ASCII only (and lacks \v), so no-break and ideographic spaces would
# count as punctuation.
_SPACE = r"\t-\r\x{85}\p{Z}"
# GPT-2's split (Hugging Face `ByteLevel(use_regex=True)`) without the
# `\s+(?!\S)` look-ahead, which RE2 lacks: a whitespace run is one piece
# here. `_RUN_END` restores the look-ahead's effect beforehand.
_GPT2_SPLIT = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
    rf"| ?[^{_SPACE}\p{{L}}\p{{N}}]+|[{_SPACE}]+"
)
# A whitespace run followed by a non-space gives its last character to what
# follows (" leading" after a run of spaces, or "\n" alone before a word).
# A byte that never occurs in UTF-8 marks that cut: no input can contain it.
_RUN_END = rf"([{_SPACE}])([{_SPACE}][^{_SPACE}])"
_CUT = b"\xff"


def split_for_byte_level_bpe(inputs, unsplittable_tokens=(), individual_digits=False):
    """Splits strings into GPT-2 pre-tokens with TensorFlow ops only.

    The same pieces as Hugging Face's pre-tokenizer
    `Sequence([Digits(individual_digits=True), ByteLevel(use_regex=True)])`
    (or `ByteLevel` alone) and llama.cpp's `"smollm"` (`"gpt-2"`) one, with
    GPT-2's whitespace rule, which keras-hub's `BytePairTokenizer` only
    approximates: a run of whitespace before a word leaves its last space to
    that word (`"  leading"` -> `" ", " leading"`) and `"\\r\\n"` before a
    word is two pieces, but a run at the end stays whole. Special tokens
    are cut out first and kept whole.

    Args:
        inputs: 1-D string tensor (UTF-8).
        unsplittable_tokens: strings matched whole (special tokens).
        individual_digits: bool. Split every digit (`\\p{N}`) off on its own
            before the GPT-2 split.

    Returns:
        A `tf.RaggedTensor` of shape `(batch, None)` of string pieces.

    Example:

    >>> import tensorflow as tf
    >>> pieces = split_for_byte_level_bpe(tf.constant(["  leading 2024"]),
    ...                                   individual_digits=True)
    >>> [p.decode() for p in pieces[0].numpy()]
    [' ', ' leading', ' ', '2', '0', '2', '4']
    """
    inputs = tf.convert_to_tensor(inputs)
    specials = sorted(set(unsplittable_tokens or ()), key=len, reverse=True)
    if specials:
        pattern = "|".join(re.escape(token) for token in specials)
        parts = tf_text.regex_split(inputs, pattern, pattern)
    else:
        parts = tf.RaggedTensor.from_tensor(inputs[:, None])
    flat = parts.flat_values
    if specials:
        is_special = tf.reduce_any(
            tf.equal(flat[:, None], tf.constant(specials)[None, :]), axis=1
        )
        text = tf.where(is_special, "", flat)
    else:
        text = flat
    # Digits first, as separate segments (llama.cpp applies its regexes one
    # after another; Hugging Face runs a Sequence of pre-tokenizers).
    if individual_digits:
        segments = tf_text.regex_split(text, r"\p{N}", r"\p{N}")
    else:
        segments = tf.RaggedTensor.from_tensor(text[:, None])
    marked = tf.strings.regex_replace(
        segments.flat_values, _RUN_END, b"\\1" + _CUT + b"\\2"
    )
    runs = tf.strings.split(marked, sep=_CUT)
    words = tf_text.regex_split(runs.flat_values, _GPT2_SPLIT, _GPT2_SPLIT)
    words = runs.with_flat_values(words).merge_dims(1, 2)
    words = segments.with_flat_values(words).merge_dims(1, 2)
    if specials:
        # A part is either special (kept as is) or text (now split).
        kept = tf.ragged.boolean_mask(flat[:, None], is_special[:, None])
        words = tf.concat([words, kept], axis=1)
    return parts.with_flat_values(words).merge_dims(1, 2)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class ByteLevelLlama3Tokenizer(keras_hub.models.Llama3Tokenizer):
    """A `Llama3Tokenizer` that splits text as GPT-2 / llama.cpp / Hugging Face do.

    keras-hub's `BytePairTokenizer` approximates GPT-2's split with RE2
    regexes in the graph (RE2 has no look-ahead) and uses Llama 3's regex in
    eager calls, so its two paths disagree with each other and with the
    model's own tokenizer: with SmolLM2's vocabulary, on 220 varied strings,
    its graph ids matched Hugging Face's on 154 and its eager ids on 125
    (whitespace runs before a word or at the end of the text, `"\\n\\n"`,
    `"\\r\\n"`, non-ASCII digits, upper-case contractions such as `"DON'T"`).
    This subclass pre-splits with `split_for_byte_level_bpe` in the graph
    (`tf.data`, exported SavedModels) and with Hugging Face's byte-level
    pre-tokenizer in eager calls; both matched on all 220. BPE merging, the
    word cache and detokenization are keras-hub's.

    Args:
        vocabulary: dict mapping tokens to ids (or a JSON file path).
        merges: list of merge rules `"a b"` (or a file path).
        bos_token: str. The start token (prepended only if the preprocessor
            is asked to).
        eos_token: str. The end token: `generate` stops on it and the
            preprocessor appends it to training examples.
        misc_special_tokens: iterable of str. Further special tokens, matched
            whole and stripped from generated text.
        alternate_end_token: str or `None`. A second token `generate` stops
            on (keras-hub's `end_token2`), e.g. `"<|endoftext|>"`.
        pad_token: str or `None`. The token that pads dense outputs (any
            token of the vocabulary); `None` for id 0 (keras-hub's Llama 3
            default). It must not be an end
            token: keras-hub's samplers read a pad that equals a stop token
            as "already finished" and generate nothing.
        individual_digits: bool. Split each digit off on its own first
            (llama.cpp `"smollm"`, SmolLM2's `Digits(individual_digits=True)`).
        **kwargs: passed to `keras_hub.models.Llama3Tokenizer`
            (`sequence_length`, `dtype`, ...).

    Example:

    >>> from keras_ragkd.models import ByteLevelLlama3Tokenizer
    >>> vocabulary = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2,
    ...               "Ġ": 3, "a": 4, "Ġa": 5}
    >>> tokenizer = ByteLevelLlama3Tokenizer(vocabulary, merges=["Ġ a"])
    >>> tokenizer("  a<|im_end|>").tolist()
    [3, 5, 2]
    """

    def __init__(
        self,
        vocabulary=None,
        merges=None,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        misc_special_tokens=(),
        alternate_end_token=None,
        pad_token=None,
        individual_digits=False,
        **kwargs,
    ):
        self.individual_digits = bool(individual_digits)
        self.alternate_end_token = alternate_end_token
        self.pad_token = pad_token
        if alternate_end_token is not None:
            # `CausalLM.generate(stop_token_ids="auto")` stops on it too.
            self._add_special_token(alternate_end_token, "end_token2")
        self._misc_special_tokens = sorted(set(misc_special_tokens))
        super().__init__(
            vocabulary=vocabulary,
            merges=merges,
            bos_token=bos_token,
            eos_token=eos_token,
            # A fresh set: Llama3Tokenizer removes bos/eos from it in place.
            misc_special_tokens=set(self._misc_special_tokens),
            **kwargs,
        )

    def _update_special_token_ids(self):
        super()._update_special_token_ids()
        if self.pad_token is not None:
            # Replaces Llama3Tokenizer's fixed 0. Not a special token: a
            # plain token may pad without being cut out of the text.
            if self.pad_token not in self.vocabulary:
                raise ValueError(
                    "`pad_token` must be in the vocabulary. "
                    f"Received: pad_token={self.pad_token!r}"
                )
            self.pad_token_id = self.vocabulary[self.pad_token]
        stops = {self.end_token_id, getattr(self, "end_token2_id", None)}
        if self.pad_token_id in stops:
            raise ValueError(
                "The padding token must not be an end token, or `generate()` "
                "would stop before the first new token; pass another "
                f"`pad_token`. Received: pad_token_id={self.pad_token_id}"
            )

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        byte_level = pre_tokenizers.ByteLevel(
            add_prefix_space=self.add_prefix_space, use_regex=True
        )
        if self.individual_digits:
            byte_level = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        self._tokenizer.pre_tokenizer = byte_level

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        # keras-hub's `BytePairTokenizer._tokenize_tf` with the pre-split
        # replaced; the merge loop and the word cache are its own.
        self._maybe_initialized_tf()
        if self.add_prefix_space:
            inputs = tf.strings.join([" ", inputs])
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = tf.expand_dims(inputs, 0)
        if inputs.shape.rank > 1:
            raise ValueError(
                "`tokenize()` inputs should be a string, list of strings, or "
                f"string tensor with rank < 2. Received: inputs={inputs}"
            )
        raw_tokens = split_for_byte_level_bpe(
            inputs, self.unsplittable_tokens, self.individual_digits
        )
        flat_tokens = raw_tokens.flat_values
        cache_lookup = self.cache.lookup(flat_tokens)
        cache_mask = cache_lookup == ""
        has_unseen_words = tf.math.reduce_any(cache_mask & (flat_tokens != ""))

        def process_unseen_tokens():
            unseen_tokens = tf.boolean_mask(flat_tokens, cache_mask)
            self._bpe_merge_and_update_cache_tf(unseen_tokens)
            return self.cache.lookup(flat_tokens)

        tokenized_words = tf.cond(
            has_unseen_words, process_unseen_tokens, lambda: cache_lookup
        )
        tokens = tf.strings.split(tokenized_words, sep=" ")
        if self.compute_dtype != tf.string:
            tokens = self.token_to_id_map.lookup(tokens)
        tokens = tf.RaggedTensor.from_row_splits(
            tokens.flat_values,
            tf.gather(tokens.row_splits, raw_tokens.row_splits),
        )
        if self.sequence_length:
            output_shape = tokens.shape.as_list()
            output_shape[-1] = self.sequence_length
            tokens = tokens.to_tensor(shape=output_shape)
        if unbatched:
            tokens = tf.squeeze(tokens, 0)
            tf.ensure_shape(tokens, shape=[self.sequence_length])
        return tokens

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bos_token": self.start_token,
                "eos_token": self.end_token,
                "misc_special_tokens": self._misc_special_tokens,
                "alternate_end_token": self.alternate_end_token,
                "pad_token": self.pad_token,
                "individual_digits": self.individual_digits,
            }
        )
        return config
