"""keras_ragkd: knowledge distillation and retrieval-augmented generation for Keras 3."""

from keras_ragkd.backend import ensure_tensorflow_backend  # noqa: F401 (public)

ensure_tensorflow_backend()

# --- distillation public API ---
from keras_ragkd.distillation import Distiller, DistillationScheduler, TeacherCache
# --- retrieval public API ---
from keras_ragkd.retrieval import MiniLMEncoder, PassageIndex, PassageReindexer, PassageRetriever, TfidfEncoder, use_backend  # noqa: E501
# --- rag public API ---
from keras_ragkd.rag import RagPreprocessor, RagQuestionAnswerer, RetrievalAugmentedGenerator
# --- data public API ---
from keras_ragkd.data import country_passages, country_questions, country_split

# --- training budgets (general callbacks) ---
from keras_ragkd.training_budget import StepLimit, TimeCosineDecay, TimeLimit

# The subpackages, reachable as attributes (`keras_ragkd.serving.export_model`).
from keras_ragkd import data, distillation, models, rag, retrieval, serving, text  # noqa: E402
from keras_ragkd import training_budget  # noqa: E402

__version__ = "0.1.0"
