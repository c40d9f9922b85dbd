"""Retrieval-augmented generation: the RAG layer, generators, task model, metrics."""

from keras_ragkd.rag.copy_generator import CopyTransformerGenerator
from keras_ragkd.rag.copy_generator import scatter_copy_probs
from keras_ragkd.rag.decoding import beam_search
from keras_ragkd.rag.input_pipeline_retrieval import with_retrieved_passages
from keras_ragkd.rag.losses import RagSequenceLoss
from keras_ragkd.rag.losses import RagTokenLoss
from keras_ragkd.rag.marginalization import document_log_probs
from keras_ragkd.rag.marginalization import rag_token_marginal
from keras_ragkd.rag.marginalization import sequence_log_likelihood
from keras_ragkd.rag.metrics import answer_scores
from keras_ragkd.rag.metrics import exact_match
from keras_ragkd.rag.metrics import token_f1
from keras_ragkd.rag.minilm_reader import MiniLMReader
from keras_ragkd.rag.passage_tokens import PassageTokenTable
from keras_ragkd.rag.preprocessor import RagPreprocessor
from keras_ragkd.rag.question_answer_preprocessor import QuestionAnswerPreprocessor
from keras_ragkd.rag.rag_question_answerer import RagQuestionAnswerer
from keras_ragkd.rag.rag_question_answerer import GENERATOR_SIZES
from keras_ragkd.rag.rag_question_answerer import build_generator
from keras_ragkd.rag.rag_question_answerer import build_rag_question_answerer
from keras_ragkd.rag.rag_question_answerer import build_query_retriever
from keras_ragkd.rag.retrieval_augmented_generator import RetrievalAugmentedGenerator
from keras_ragkd.rag.causal_lm_generator import CausalLMGenerator
from keras_ragkd.rag.copy_head import CopyHead
from keras_ragkd.rag.causal_lm_preprocessor import CausalLMRagPreprocessor
from keras_ragkd.rag.causal_lm_task import CausalLMRagQuestionAnswerer
from keras_ragkd.rag.causal_lm_task import build_causal_lm_rag_question_answerer

__all__ = [
    "CopyTransformerGenerator",
    "MiniLMReader",
    "PassageTokenTable",
    "QuestionAnswerPreprocessor",
    "RagPreprocessor",
    "RagQuestionAnswerer",
    "RagSequenceLoss",
    "RagTokenLoss",
    "RetrievalAugmentedGenerator",
    "answer_scores",
    "GENERATOR_SIZES",
    "beam_search",
    "build_generator",
    "build_rag_question_answerer",
    "build_query_retriever",
    "document_log_probs",
    "exact_match",
    "rag_token_marginal",
    "scatter_copy_probs",
    "sequence_log_likelihood",
    "token_f1",
    "with_retrieved_passages",
    "CausalLMGenerator",
    "CopyHead",
    "CausalLMRagPreprocessor",
    "CausalLMRagQuestionAnswerer",
    "build_causal_lm_rag_question_answerer",
]
