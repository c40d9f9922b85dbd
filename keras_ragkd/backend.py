"""Backend guard: keras_ragkd runs on Keras 3 with the TensorFlow backend.

`tf.py_function`, `tf.distribute` and SavedModel export are TensorFlow
features, so the package refuses any other Keras backend at import time with a
message that says how to fix it.
"""

import os

REQUIRED_BACKEND = "tensorflow"


def ensure_tensorflow_backend():
    """Selects the TensorFlow backend, or raises if another one is active.

    If `KERAS_BACKEND` is unset it is set to `"tensorflow"` before Keras is
    imported. If Keras is already configured for another backend, a
    `ValueError` says how to switch.

    Example:

    >>> from keras_ragkd.backend import ensure_tensorflow_backend
    >>> ensure_tensorflow_backend()
    'tensorflow'
    """
    requested = os.environ.setdefault("KERAS_BACKEND", REQUIRED_BACKEND)
    if requested != REQUIRED_BACKEND:
        raise ValueError(
            "keras_ragkd needs the TensorFlow backend of Keras 3 "
            "(tf.py_function, tf.distribute and SavedModel export are "
            "TensorFlow features). Set the environment variable "
            "`KERAS_BACKEND=tensorflow` before importing keras or "
            f"keras_ragkd. Received: KERAS_BACKEND={requested!r}"
        )
    import keras

    active = keras.backend.backend()
    if active != REQUIRED_BACKEND:
        raise ValueError(
            "keras_ragkd needs the TensorFlow backend of Keras 3, but Keras "
            "was already configured with another one (environment variable or "
            "~/.keras/keras.json). Set `KERAS_BACKEND=tensorflow` before "
            f"importing keras. Received: keras.backend.backend()={active!r}"
        )
    return active
