"""Every `>>>` example in the package's docstrings runs and prints what it says.

The documentation cannot drift from the code: each module's examples run as a
doctest (one test per module, so `pytest -n 2` spreads them), and no example
may opt out with `# doctest: +SKIP`.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import keras_ragkd

PACKAGE_DIR = Path(keras_ragkd.__file__).parent
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SKIP_DIRECTIVE = re.compile(r"doctest:.*\+SKIP")


def _module_names():
    names = []
    for info in pkgutil.walk_packages(keras_ragkd.__path__, "keras_ragkd."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def _docstring_tests(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module.__name__) if test.examples]


@pytest.mark.parametrize("module_name", _module_names())
def test_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Examples that write files write them here.
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in _docstring_tests(module):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


def test_no_example_is_skipped():
    skipped = [
        f"{path.relative_to(PACKAGE_DIR)}:{number}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SKIP_DIRECTIVE.search(line)
    ]
    assert not skipped, f"Docstring examples that do not run: {skipped}"


def test_public_api_has_examples():
    """Each public class and function exported at a subpackage's top level
    carries an example."""
    missing = []
    for name in ("distillation", "rag", "retrieval", "serving", "text", "models", "data"):
        subpackage = importlib.import_module(f"keras_ragkd.{name}")
        for attribute in getattr(subpackage, "__all__", ()):
            value = getattr(subpackage, attribute)
            if callable(value) and ">>>" not in (value.__doc__ or ""):
                missing.append(f"keras_ragkd.{name}.{attribute}")
    assert not missing, f"Public names without a runnable example: {missing}"
