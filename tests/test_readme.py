"""Every Python block of the README runs as written, in order, in a fresh process."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_examples():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(python_blocks(README.read_text(encoding="utf-8"))))
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=str(tmp_path), env=environment,
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "student_saved_model" / "saved_model.pb").exists()
    assert (tmp_path / "student_model" / "config.json").exists()
