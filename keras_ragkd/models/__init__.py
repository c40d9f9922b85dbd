"""Pretrained weights into keras-hub: MiniLM, llama-family GGUF files such as SmolLM2,
and small llama students of them."""

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
from keras_ragkd.models.llama_student import build_llama_student
from keras_ragkd.models.llama_student import principal_axes
from keras_ragkd.models.llama_student import project_embedding
from keras_ragkd.models.llama_student import subclone_layers
from keras_ragkd.models.minilm import EMBEDDING_DIM
from keras_ragkd.models.minilm import MiniLMEmbedder
from keras_ragkd.models.minilm import load_minilm_backbone
from keras_ragkd.models.minilm import load_minilm_tokenizer
from keras_ragkd.models.minilm import minilm_preset_path
from keras_ragkd.models.smollm2 import load_smollm2
from keras_ragkd.models.smollm2 import smollm2_chat_template
from keras_ragkd.models.smollm2 import smollm2_gguf_path

__all__ = [
    "ByteLevelLlama3Tokenizer",
    "ChatTemplate",
    "EMBEDDING_DIM",
    "Llama3CausalLMPreprocessor",
    "LlamaGGUFFile",
    "MiniLMEmbedder",
    "build_llama_student",
    "gguf_chat_template",
    "llama3_backbone_from_gguf",
    "llama3_tokenizer_from_gguf",
    "load_gguf_causal_lm",
    "load_minilm_backbone",
    "load_minilm_tokenizer",
    "load_smollm2",
    "minilm_preset_path",
    "principal_axes",
    "project_embedding",
    "smollm2_chat_template",
    "smollm2_gguf_path",
    "split_for_byte_level_bpe",
    "subclone_layers",
    "unpermute_rope_rows",
]
