"""The label structure of a batch that carries cached teacher outputs.

`TeacherCache.attach(dataset)` turns each `(x, y[, sample_weight])` batch into
`(x, {"labels": y, "teacher_logits": t}[, sample_weight])` (or the top-k
fields below); `Distiller.train_step`/`test_step` split it back with `split`.
"""

LABELS = "labels"
TEACHER_LOGITS = "teacher_logits"
TEACHER_TOP_LOGITS = "teacher_top_logits"
TEACHER_TOP_INDICES = "teacher_top_indices"
TEACHER_REST_LOG_MASS = "teacher_rest_log_mass"
CACHE_TEMPERATURE = "cache_temperature"

TEACHER_KEYS = (
    TEACHER_LOGITS,
    TEACHER_TOP_LOGITS,
    TEACHER_TOP_INDICES,
    TEACHER_REST_LOG_MASS,
    CACHE_TEMPERATURE,
)


def is_cached(y):
    """Whether the labels `y` carry cached teacher outputs."""
    return isinstance(y, dict) and LABELS in y and (
        TEACHER_LOGITS in y or TEACHER_TOP_LOGITS in y
    )


def split(y):
    """Splits cached labels into `(labels, teacher_outputs)`.

    Args:
        y: labels of a batch, possibly with cached teacher outputs.

    Returns:
        `(labels, teacher_outputs)`, where `teacher_outputs` is a dict of the
        cached teacher tensors, or `None` when `y` carries none.

    Example:

    >>> split({"labels": [1], "teacher_logits": [[0.5, 0.1]]})
    ([1], {'teacher_logits': [[0.5, 0.1]]})
    >>> split([1])
    ([1], None)
    """
    if not is_cached(y):
        return y, None
    teacher_outputs = {key: y[key] for key in TEACHER_KEYS if key in y}
    return y[LABELS], teacher_outputs
