"""In-graph text tokenizers."""

from keras_ragkd.text.uncased_bert_tokenizer import UncasedBertTokenizer
from keras_ragkd.text.uncased_bert_tokenizer import normalize_uncased

__all__ = ["UncasedBertTokenizer", "normalize_uncased"]
