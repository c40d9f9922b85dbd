"""A small llama-family student over a teacher's vocabulary, its embedding projected."""

import keras
import keras_hub
import numpy as np

from keras_ragkd.validation import is_integer

EMBEDDING_INITS = ("projection", "random")


def project_embedding(embedding, hidden_dim):
    """The teacher's token embedding on its top `hidden_dim` principal axes.

    `embedding @ P`, where the columns of `P` (`(teacher_dim, hidden_dim)`,
    orthonormal) are the leading eigenvectors of `embeddingᵀ embedding`
    (an uncentred PCA, i.e. the truncated SVD `U_h S_h`). Dot products
    between tokens, which tied output logits are made of, are kept as far
    as `hidden_dim` dimensions allow.

    Args:
        embedding: float array `(vocabulary_size, teacher_dim)`.
        hidden_dim: int, at most `teacher_dim`.

    Returns:
        float32 NumPy array `(vocabulary_size, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> embedding = np.random.default_rng(0).normal(size=(50, 8))
    >>> project_embedding(embedding, 3).shape
    (50, 3)
    >>> full = project_embedding(embedding, 8)
    >>> bool(np.allclose(full @ full.T, embedding @ embedding.T, atol=1e-4))
    True
    """
    embedding = np.asarray(embedding, "float64")
    if embedding.ndim != 2 or not 1 <= hidden_dim <= embedding.shape[1]:
        raise ValueError(
            "`hidden_dim` must be between 1 and the embedding's width "
            f"{embedding.shape[-1]}. Received: hidden_dim={hidden_dim!r}"
        )
    eigenvalues, eigenvectors = np.linalg.eigh(embedding.T @ embedding)
    leading = eigenvectors[:, np.argsort(eigenvalues)[::-1][:hidden_dim]]
    return (embedding @ leading).astype("float32")


def build_llama_student(teacher_backbone, hidden_dim=128, num_layers=6, num_query_heads=4,
                        num_key_value_heads=2, intermediate_dim=None,
                        embedding_init="projection", seed=0, dtype=None):
    """A small `Llama3Backbone` over the teacher's vocabulary, for distillation.

    Same vocabulary (so the student's per-token distributions line up with
    the teacher's token for token), RoPE base and RMSNorm epsilon as the
    teacher, tied input/output embeddings, and a smaller width and depth.
    With `embedding_init="projection"` the token embedding starts from the
    teacher's projected on its principal axes (`project_embedding`, the
    teacher's scale kept); the transformer layers start random either way.

    For SmolLM2-135M (49,152 tokens, width 576, 30 layers, 134.5 M
    weights) the defaults give 7.8 M weights (1/17), of which 6.3 M are
    the embedding.

    Args:
        teacher_backbone: a keras-hub llama-family backbone (e.g.
            `load_smollm2().backbone`) with `token_embedding`.
        hidden_dim: int, the student's width (≤ the teacher's for
            `"projection"`); a multiple of `num_query_heads`.
        num_layers: int, transformer layers.
        num_query_heads: int, attention heads.
        num_key_value_heads: int, key/value heads (divides `num_query_heads`).
        intermediate_dim: int, the feed-forward width (default
            `4 * hidden_dim`).
        embedding_init: `"projection"` or `"random"` (keras-hub's own init).
        seed: int, seeds the random initial weights.
        dtype: the student's dtype policy (default Keras').

    Returns:
        A `keras_hub.models.Llama3Backbone`.

    Example:

    >>> import keras_hub
    >>> teacher = keras_hub.models.Llama3Backbone(
    ...     vocabulary_size=64, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
    ...     tie_word_embeddings=True)
    >>> student = build_llama_student(teacher, hidden_dim=8, num_layers=1,
    ...                               num_query_heads=2, num_key_value_heads=1)
    >>> student.vocabulary_size, student.hidden_dim, student.num_layers
    (64, 8, 1)
    >>> student.count_params() < teacher.count_params()
    True
    """
    if embedding_init not in EMBEDDING_INITS:
        raise ValueError(
            f"`embedding_init` must be one of {EMBEDDING_INITS}. "
            f"Received: embedding_init={embedding_init!r}"
        )
    if not hasattr(teacher_backbone, "token_embedding"):
        raise ValueError(
            "`teacher_backbone` must be a keras-hub llama-family backbone (with a "
            f"`token_embedding`). Received: teacher_backbone={teacher_backbone!r}"
        )
    if not is_integer(hidden_dim) or hidden_dim % num_query_heads:
        raise ValueError(
            "`hidden_dim` must be a positive multiple of `num_query_heads` "
            f"({num_query_heads}). Received: hidden_dim={hidden_dim!r}"
        )
    keras.utils.set_random_seed(seed)
    student = keras_hub.models.Llama3Backbone(
        vocabulary_size=int(teacher_backbone.vocabulary_size),
        num_layers=num_layers,
        num_query_heads=num_query_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim or 4 * hidden_dim,
        num_key_value_heads=num_key_value_heads,
        rope_max_wavelength=getattr(teacher_backbone, "rope_max_wavelength", 10000),
        layer_norm_epsilon=getattr(teacher_backbone, "layer_norm_epsilon", 1e-6),
        tie_word_embeddings=True,
        dtype=dtype,
    )
    if embedding_init == "projection":
        teacher = keras.ops.convert_to_numpy(teacher_backbone.token_embedding.embeddings)
        student.token_embedding.embeddings.assign(project_embedding(teacher, hidden_dim))
    return student
