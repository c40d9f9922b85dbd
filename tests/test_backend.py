import os
import subprocess
import sys

import keras

import keras_ragkd


def _import_under(backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run(
        [sys.executable, "-c", "import keras_ragkd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tensorflow_backend_is_active():
    assert keras.backend.backend() == "tensorflow"
    assert keras_ragkd.ensure_tensorflow_backend() == "tensorflow"


def test_other_backend_is_refused_with_a_fix():
    result = _import_under("jax")
    assert result.returncode != 0
    assert "ValueError" in result.stderr
    assert "KERAS_BACKEND=tensorflow" in result.stderr
    assert "Received: KERAS_BACKEND='jax'" in result.stderr
