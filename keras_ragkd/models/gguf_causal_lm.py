"""A llama-family GGUF file as a keras-hub `Llama3CausalLM` with its preprocessor."""

import keras_hub

from keras_ragkd.models.byte_level_tokenizer import ByteLevelLlama3Tokenizer
from keras_ragkd.models.chat_template import ChatTemplate
from keras_ragkd.models.gguf_file import LlamaGGUFFile
from keras_ragkd.models.gguf_weights import llama3_backbone_from_gguf
from keras_ragkd.models.llama3_preprocessor import Llama3CausalLMPreprocessor
from keras_ragkd.validation import is_integer

# End-of-generation tokens llama.cpp also stops on besides the file's EOS.
_END_OF_GENERATION = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>")


def _checkpoint(checkpoint):
    if isinstance(checkpoint, LlamaGGUFFile):
        return checkpoint
    return LlamaGGUFFile(checkpoint)


def llama3_tokenizer_from_gguf(checkpoint, sequence_length=None):
    """Builds the in-graph tokenizer of a GGUF file from its metadata.

    Args:
        checkpoint: a `LlamaGGUFFile` or the path of a `.gguf` file.
        sequence_length: int or `None`. If set, dense padded outputs.

    Returns:
        A `ByteLevelLlama3Tokenizer` (a `keras_hub.models.Llama3Tokenizer`)
        whose ids are llama.cpp's and Hugging Face's for the same model.

    Example:

    >>> from keras_ragkd.models import llama3_tokenizer_from_gguf
    >>> from keras_ragkd.models import smollm2_gguf_path
    >>> tokenizer = llama3_tokenizer_from_gguf(smollm2_gguf_path())
    >>> tokenizer.detokenize(tokenizer("  indented 42"))
    '  indented 42'
    """
    checkpoint = _checkpoint(checkpoint)
    tokens = checkpoint.tokens
    eos_id = checkpoint.eos_token_id
    if eos_id is None:
        raise ValueError(
            f"'{checkpoint.path}' names no end token, so generation could "
            "not stop. Received: tokenizer.ggml.eos_token_id=None"
        )
    eos = tokens[eos_id]
    bos = tokens[checkpoint.bos_token_id] if checkpoint.bos_token_id is not None else eos
    special = set(checkpoint.special_tokens) | {bos, eos}
    alternates = [t for t in _END_OF_GENERATION if t in special and t != eos]
    stops = {eos, *alternates[:1]}
    # The file's padding token (often the EOS) unless it is a stop token,
    # else the first special token that is not: keras-hub's sampler would
    # read pads equal to a stop token as finished sequences.
    padding_id = checkpoint.metadata.get("tokenizer.ggml.padding_token_id")
    candidates = [tokens[padding_id]] if padding_id in range(len(tokens)) else []
    candidates += checkpoint.special_tokens + tokens
    pad = next(token for token in candidates if token not in stops)
    return ByteLevelLlama3Tokenizer(
        vocabulary={token: i for i, token in enumerate(tokens)},
        merges=checkpoint.merges,
        bos_token=bos,
        eos_token=eos,
        misc_special_tokens=special - {bos, eos},
        alternate_end_token=alternates[0] if alternates else None,
        pad_token=pad,
        individual_digits=checkpoint.individual_digits,
        sequence_length=sequence_length,
    )


def load_gguf_causal_lm(checkpoint, dtype="float32", sequence_length=1024):
    """Loads a llama-family GGUF file as a keras-hub `Llama3CausalLM`.

    The model is an ordinary keras-hub task: `generate()` with a KV cache,
    `fit()` (LoRA with `model.backbone.enable_lora(rank)`), `save()`. Its
    preprocessor tokenizes in the graph (`tf.data`, SavedModel export) and
    adds a start token only if the file asks for one
    (`tokenizer.ggml.add_bos_token`; SmolLM2 does not).

    Args:
        checkpoint: a `LlamaGGUFFile` or the path of a `.gguf` file.
        dtype: str. `"float32"` (default), `"bfloat16"`, or
            `"mixed_bfloat16"` (float32 weights, bfloat16 compute).
        sequence_length: int. The preprocessor's padded length and
            `generate()`'s default `max_length`; at most the file's context
            length.

    Returns:
        A `keras_hub.models.Llama3CausalLM` with a
        `keras_ragkd.models.Llama3CausalLMPreprocessor`.

    Example:

    >>> from keras_ragkd.models import load_gguf_causal_lm, smollm2_gguf_path
    >>> causal_lm = load_gguf_causal_lm(smollm2_gguf_path(), sequence_length=64)
    >>> causal_lm.compile(sampler="greedy")
    >>> causal_lm.generate("The capital of France is", max_length=7)
    'The capital of France is Paris.'
    """
    checkpoint = _checkpoint(checkpoint)
    if not is_integer(sequence_length) or sequence_length > checkpoint.context_length:
        raise ValueError(
            "`sequence_length` must be a positive integer no longer than the "
            f"model's context length ({checkpoint.context_length}). "
            f"Received: sequence_length={sequence_length!r}"
        )
    backbone = llama3_backbone_from_gguf(checkpoint, dtype=dtype)
    preprocessor = Llama3CausalLMPreprocessor(
        tokenizer=llama3_tokenizer_from_gguf(checkpoint),
        sequence_length=sequence_length,
        add_start_token=checkpoint.add_bos_token,
    )
    return keras_hub.models.Llama3CausalLM(
        backbone=backbone, preprocessor=preprocessor
    )


def gguf_chat_template(checkpoint):
    """Returns the `ChatTemplate` a GGUF file's metadata describes.

    Args:
        checkpoint: a `LlamaGGUFFile` or the path of a `.gguf` file.

    Returns:
        A `ChatTemplate` with the template's default system prompt, if any.

    Example:

    >>> from keras_ragkd.models import smollm2_gguf_path
    >>> gguf_chat_template(smollm2_gguf_path()).system_prompt
    'You are a helpful AI assistant named SmolLM, trained by Hugging Face'
    """
    return ChatTemplate.from_jinja(_checkpoint(checkpoint).chat_template)
