"""Knowledge base, text encoders and the retrieval layer."""

from keras_ragkd.retrieval.callbacks import PassageReindexer
from keras_ragkd.retrieval.encoder_records import keras_query_encoder
from keras_ragkd.retrieval.encoders import KerasTextEncoder
from keras_ragkd.retrieval.fusion import fuse_candidates
from keras_ragkd.retrieval.hybrid_query_encoder import HybridQueryEncoder
from keras_ragkd.retrieval.hybrid_retriever import HybridRetriever
from keras_ragkd.retrieval.minilm_encoder import MiniLMEncoder
from keras_ragkd.retrieval.minilm_encoder import load_minilm_encoder
from keras_ragkd.retrieval.passage import Passage
from keras_ragkd.retrieval.passage_index import PassageIndex
from keras_ragkd.retrieval.passage_index import SearchResult
from keras_ragkd.retrieval.passage_index import check_index_factory
from keras_ragkd.retrieval.retriever import PassageRetriever
from keras_ragkd.retrieval.retriever import use_backend
from keras_ragkd.retrieval.tfidf_encoder import TfidfEncoder
from keras_ragkd.retrieval.tfidf_query_encoder import TfidfQueryEncoder

__all__ = [
    "HybridQueryEncoder",
    "HybridRetriever",
    "KerasTextEncoder",
    "MiniLMEncoder",
    "Passage",
    "PassageIndex",
    "PassageReindexer",
    "PassageRetriever",
    "SearchResult",
    "TfidfEncoder",
    "TfidfQueryEncoder",
    "check_index_factory",
    "fuse_candidates",
    "keras_query_encoder",
    "load_minilm_encoder",
    "use_backend",
]
