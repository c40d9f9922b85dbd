"""In-graph text tokenizers."""

from keras_ragkd.text.minilm import load_minilm_tokenizer
from keras_ragkd.text.minilm import minilm_preset_path

__all__ = ["load_minilm_tokenizer", "minilm_preset_path"]
