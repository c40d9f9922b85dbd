"""keras_ragkd: knowledge distillation and retrieval-augmented generation for Keras 3."""

from keras_ragkd.backend import ensure_tensorflow_backend  # noqa: F401 (public)

ensure_tensorflow_backend()

# --- distillation public API ---
# --- retrieval public API ---
# --- rag public API ---
# --- data public API ---
from keras_ragkd.data import country_passages, country_questions, country_split

__version__ = "0.1.0"
