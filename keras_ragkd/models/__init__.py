"""Pretrained weights into keras-hub: llama-family GGUF files such as SmolLM2."""

from keras_ragkd.models.byte_level_tokenizer import ByteLevelLlama3Tokenizer
from keras_ragkd.models.byte_level_tokenizer import split_for_byte_level_bpe
from keras_ragkd.models.chat_template import ChatTemplate
from keras_ragkd.models.gguf_causal_lm import gguf_chat_template
from keras_ragkd.models.gguf_causal_lm import llama3_tokenizer_from_gguf
from keras_ragkd.models.gguf_causal_lm import load_gguf_causal_lm
from keras_ragkd.models.gguf_file import LlamaGGUFFile
from keras_ragkd.models.gguf_weights import llama3_backbone_from_gguf
from keras_ragkd.models.gguf_weights import unpermute_rope_rows
from keras_ragkd.models.llama3_preprocessor import Llama3CausalLMPreprocessor
from keras_ragkd.models.minilm import MiniLMEmbedder, load_minilm_backbone, load_minilm_tokenizer, minilm_preset_path  # noqa: E501
from keras_ragkd.models.smollm2 import load_smollm2
from keras_ragkd.models.smollm2 import smollm2_chat_template
from keras_ragkd.models.smollm2 import smollm2_gguf_path

__all__ = [
    "ByteLevelLlama3Tokenizer",
    "ChatTemplate",
    "Llama3CausalLMPreprocessor",
    "LlamaGGUFFile",
    "gguf_chat_template",
    "llama3_backbone_from_gguf",
    "llama3_tokenizer_from_gguf",
    "load_gguf_causal_lm",
    "load_smollm2",
    "smollm2_chat_template",
    "smollm2_gguf_path",
    "split_for_byte_level_bpe",
    "unpermute_rope_rows",
]
__all__ += ["MiniLMEmbedder", "load_minilm_backbone", "load_minilm_tokenizer", "minilm_preset_path"]
