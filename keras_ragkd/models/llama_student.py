"""A small llama-family student over a teacher's vocabulary, its weights cut from the teacher's."""

import keras
import keras_hub
import numpy as np

from keras_ragkd.validation import is_integer

EMBEDDING_INITS = ("projection", "random")
LAYER_INITS = ("random", "teacher")


def principal_axes(embedding, hidden_dim):
    """The leading `hidden_dim` eigenvectors of `embeddingᵀ embedding`.

    Args:
        embedding: float array `(vocabulary_size, teacher_dim)`.
        hidden_dim: int, at most `teacher_dim`.

    Returns:
        float64 NumPy array `(teacher_dim, hidden_dim)`, orthonormal columns,
        the most variance first.

    Example:

    >>> import numpy as np
    >>> axes = principal_axes(np.random.default_rng(0).normal(size=(50, 8)), 3)
    >>> axes.shape, bool(np.allclose(axes.T @ axes, np.eye(3)))
    ((8, 3), True)
    """
    embedding = np.asarray(embedding, "float64")
    if embedding.ndim != 2 or not is_integer(hidden_dim) or not (
        1 <= hidden_dim <= embedding.shape[1]
    ):
        raise ValueError(
            "`hidden_dim` must be between 1 and the embedding's width "
            f"{embedding.shape[-1]}. Received: hidden_dim={hidden_dim!r}"
        )
    eigenvalues, eigenvectors = np.linalg.eigh(embedding.T @ embedding)
    return eigenvectors[:, np.argsort(eigenvalues)[::-1][:hidden_dim]]


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
    return (embedding @ principal_axes(embedding, hidden_dim)).astype("float32")


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable).astype("float64")


def _top(scores, count):
    """Indices of the `count` largest `scores`, in their original order."""
    return np.sort(np.argsort(scores)[::-1][:count])


def _attention_heads(attention, num_query_heads, num_key_value_heads):
    """Teacher query and key/value heads to keep, by weight norm, groups intact.

    keras-hub repeats each key/value head over `num_query_heads //
    num_key_value_heads` consecutive query heads; the kept query heads of a
    student group all come from the teacher group of its key/value head.
    """
    query = _numpy(attention._query_dense.kernel)  # (model, heads, head_dim)
    output = _numpy(attention._output_dense.kernel)  # (heads, head_dim, model)
    importance = (np.linalg.norm(query, axis=(0, 2))
                  * np.linalg.norm(output, axis=(1, 2)))
    teacher_groups = importance.reshape(attention.num_key_value_heads, -1)
    kv_heads = _top(teacher_groups.sum(axis=1), num_key_value_heads)
    group = num_query_heads // num_key_value_heads
    query_heads = np.concatenate([
        kv * teacher_groups.shape[1] + _top(teacher_groups[kv], group) for kv in kv_heads
    ])
    return query_heads, kv_heads


def _subclone_layer(teacher_layer, student_layer, axes, width_scale):
    """One student decoder layer from a teacher layer (see `build_llama_student`)."""
    t_attention = teacher_layer._self_attention_layer
    s_attention = student_layer._self_attention_layer
    query_heads, kv_heads = _attention_heads(
        t_attention, s_attention.num_query_heads, s_attention.num_key_value_heads)
    # RMSNorm is blind to rotations: the teacher's norm scale and the width
    # change fold into the projections that read the normalised stream.
    fold = axes.T * _numpy(teacher_layer._self_attention_layernorm.scale) * width_scale
    assignments = [
        (s_attention._query_dense.kernel, np.einsum(
            "sm,muh->suh", fold, _numpy(t_attention._query_dense.kernel)[:, query_heads])),
        (s_attention._key_dense.kernel, np.einsum(
            "sm,muh->suh", fold, _numpy(t_attention._key_dense.kernel)[:, kv_heads])),
        (s_attention._value_dense.kernel, np.einsum(
            "sm,muh->suh", fold, _numpy(t_attention._value_dense.kernel)[:, kv_heads])),
        (s_attention._output_dense.kernel, np.einsum(
            "uhm,ms->uhs", _numpy(t_attention._output_dense.kernel)[query_heads], axes)),
    ]
    gate = _numpy(teacher_layer._feedforward_gate_dense.kernel)
    up = _numpy(teacher_layer._feedforward_intermediate_dense.kernel)
    down = _numpy(teacher_layer._feedforward_output_dense.kernel)
    units = _top(np.linalg.norm(gate, axis=0) * np.linalg.norm(up, axis=0)
                 * np.linalg.norm(down, axis=1),
                 student_layer._feedforward_gate_dense.units)
    fold = axes.T * _numpy(teacher_layer._feedforward_layernorm.scale) * width_scale
    assignments += [
        (student_layer._feedforward_gate_dense.kernel, fold @ gate[:, units]),
        (student_layer._feedforward_intermediate_dense.kernel, fold @ up[:, units]),
        (student_layer._feedforward_output_dense.kernel, down[units] @ axes),
        (student_layer._self_attention_layernorm.scale, np.ones(axes.shape[1])),
        (student_layer._feedforward_layernorm.scale, np.ones(axes.shape[1])),
    ]
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def subclone_layers(teacher_backbone, student_backbone, axes, teacher_layers=None):
    """Initialises the student's decoder layers from a subset of the teacher's.

    "Weight subcloning" (Samragh et al., 2023): each student layer is a
    teacher layer with its residual stream projected on `axes` (the
    student's embedding basis), the query/key/value heads and feed-forward
    units of largest weight norm kept (key/value groups intact), and each
    RMSNorm scale folded into the weights that read it, rescaled for the
    narrower width. At the teacher's own width with every head, unit and
    layer kept the student computes the teacher's function, up to the final
    norm's scale (kept on the diagonal of its rotation).

    Args:
        teacher_backbone: a keras-hub llama-family backbone.
        student_backbone: a narrower one with the teacher's head size.
        axes: float array `(teacher_dim, student_dim)`, orthonormal columns.
        teacher_layers: teacher layer indices, one per student layer (default:
            evenly spaced, first and last included).

    Returns:
        The teacher layer indices used, one per student layer.

    Example:

    >>> import keras_hub
    >>> def backbone(width, layers, heads):
    ...     return keras_hub.models.Llama3Backbone(
    ...         vocabulary_size=32, num_layers=layers, num_query_heads=heads,
    ...         num_key_value_heads=1, hidden_dim=width, intermediate_dim=16,
    ...         tie_word_embeddings=True)
    >>> teacher, student = backbone(16, 3, 2), backbone(8, 2, 1)
    >>> axes = principal_axes(teacher.token_embedding.embeddings.numpy(), 8)
    >>> subclone_layers(teacher, student, axes)
    [0, 2]
    """
    teacher_dim, student_dim = axes.shape
    count = student_backbone.num_layers
    if teacher_layers is None:
        teacher_layers = np.linspace(0, teacher_backbone.num_layers - 1, count).round()
    teacher_layers = [int(i) for i in teacher_layers]
    if len(teacher_layers) != count or not all(
        0 <= i < teacher_backbone.num_layers for i in teacher_layers
    ):
        raise ValueError(
            f"`teacher_layers` must hold {count} indices of the teacher's "
            f"{teacher_backbone.num_layers} layers. Received: teacher_layers={teacher_layers}"
        )
    width_scale = np.sqrt(teacher_dim / student_dim)
    for student_layer, index in zip(student_backbone.transformer_layers, teacher_layers):
        _subclone_layer(teacher_backbone.transformer_layers[index], student_layer, axes,
                        width_scale)
    final = _numpy(teacher_backbone.layer_norm.scale)
    student_backbone.layer_norm.scale.assign(
        ((axes**2).T @ final * width_scale).astype(student_backbone.layer_norm.scale.dtype))
    return teacher_layers


def _check_subclone_shapes(teacher, hidden_dim, num_layers, num_query_heads,
                           num_key_value_heads, intermediate_dim):
    """Raises unless the student's shapes can be cut from the teacher's."""
    teacher_head = teacher.hidden_dim // teacher.num_query_heads
    teacher_group = teacher.num_query_heads // teacher.num_key_value_heads
    limits = {
        "hidden_dim // num_query_heads": (hidden_dim // num_query_heads, teacher_head, "=="),
        "num_layers": (num_layers, teacher.num_layers, "<="),
        "num_key_value_heads": (num_key_value_heads, teacher.num_key_value_heads, "<="),
        "num_query_heads // num_key_value_heads": (
            num_query_heads // num_key_value_heads, teacher_group, "<="),
        "intermediate_dim": (intermediate_dim, teacher.intermediate_dim, "<="),
    }
    for name, (value, limit, relation) in limits.items():
        if (value != limit) if relation == "==" else (value > limit):
            raise ValueError(
                f'`layer_init="teacher"` needs {name} {relation} the teacher\'s ({limit}). '
                f"Received: {name}={value}"
            )


def build_llama_student(teacher_backbone, hidden_dim=128, num_layers=6, num_query_heads=4,
                        num_key_value_heads=2, intermediate_dim=None,
                        embedding_init="projection", layer_init="random",
                        teacher_layers=None, seed=0, dtype=None):
    """A small `Llama3Backbone` over the teacher's vocabulary, for distillation.

    Same vocabulary (so the student's per-token distributions line up with
    the teacher's token for token), RoPE base and RMSNorm epsilon as the
    teacher, tied input/output embeddings, and a smaller width and depth.
    With `embedding_init="projection"` the token embedding starts from the
    teacher's projected on its principal axes (`project_embedding`, the
    teacher's scale kept). With `layer_init="teacher"` the decoder layers
    are cut from the teacher's too (`subclone_layers`: its heads and
    feed-forward units of largest weight norm, on the same axes); this needs
    the teacher's head size and at most its heads and units. Otherwise they
    start random.

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
        layer_init: `"random"` or `"teacher"` (needs `"projection"`).
        teacher_layers: with `"teacher"`, the teacher layer each student layer
            starts from (default: evenly spaced, first and last included).
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
    if layer_init not in LAYER_INITS or (
        layer_init == "teacher" and embedding_init != "projection"
    ):
        raise ValueError(
            f"`layer_init` must be one of {LAYER_INITS} (\"teacher\" with "
            f'embedding_init="projection"). Received: layer_init={layer_init!r}'
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
    intermediate_dim = intermediate_dim or 4 * hidden_dim
    if layer_init == "teacher":
        _check_subclone_shapes(teacher_backbone, hidden_dim, num_layers, num_query_heads,
                               num_key_value_heads, intermediate_dim)
    keras.utils.set_random_seed(seed)
    student = keras_hub.models.Llama3Backbone(
        vocabulary_size=int(teacher_backbone.vocabulary_size),
        num_layers=num_layers,
        num_query_heads=num_query_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        num_key_value_heads=num_key_value_heads,
        rope_max_wavelength=getattr(teacher_backbone, "rope_max_wavelength", 10000),
        layer_norm_epsilon=getattr(teacher_backbone, "layer_norm_epsilon", 1e-6),
        tie_word_embeddings=True,
        dtype=dtype,
    )
    if embedding_init == "projection":
        teacher = _numpy(teacher_backbone.token_embedding.embeddings)
        axes = principal_axes(teacher, hidden_dim)
        student.token_embedding.embeddings.assign((teacher @ axes).astype("float32"))
        if layer_init == "teacher":
            subclone_layers(teacher_backbone, student, axes, teacher_layers)
    return student
