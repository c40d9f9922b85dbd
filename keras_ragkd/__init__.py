"""keras_ragkd: knowledge distillation and retrieval-augmented generation for Keras 3."""

from keras_ragkd.backend import ensure_tensorflow_backend  # noqa: F401 (public)

ensure_tensorflow_backend()

# --- distillation public API ---
from keras_ragkd.distillation import Distiller, DistillationScheduler, TeacherCache
# --- retrieval public API ---
from keras_ragkd.retrieval import HybridRetriever, MiniLMEncoder, PassageIndex, PassageReindexer, PassageRetriever, TfidfEncoder, use_backend  # noqa: E501
# --- rag public API ---
from keras_ragkd.rag import RagPreprocessor, RagQuestionAnswerer, RetrievalAugmentedGenerator, build_rag_question_answerer  # noqa: E501
# --- data public API ---
from keras_ragkd.data import country_passages, country_questions, country_split

# --- general training callbacks: time/step budgets, resuming a killed fit at its step ---
from keras_ragkd.training_budget import StepLimit, TimeCosineDecay, TimeLimit
from keras_ragkd.resume import StepBackupAndRestore

# The subpackages, reachable as attributes (`keras_ragkd.serving.export_model`).
from keras_ragkd import data, distillation, models, rag, retrieval, serving, text  # noqa: E402
from keras_ragkd import resume, training_budget  # noqa: E402

__version__ = "0.1.0"
