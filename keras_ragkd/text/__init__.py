"""In-graph text tokenizers."""

from keras_ragkd.text.minilm import load_minilm_tokenizer  # noqa: F401 (transitional)
from keras_ragkd.text.minilm import minilm_preset_path  # noqa: F401 (transitional)
from keras_ragkd.text.uncased_bert_tokenizer import UncasedBertTokenizer
from keras_ragkd.text.uncased_bert_tokenizer import normalize_uncased

__all__ = ["UncasedBertTokenizer", "normalize_uncased"]
