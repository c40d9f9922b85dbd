"""Atomic writers for benchmark results (JSON and PNG under `results/`).

Example:

    from results_io import write_json
    write_json({"ratio": 0.98}, "results/example.json")
"""

import json

from keras_ragkd.io_utils import atomic_write


def write_json(results, path):
    """Writes `results` as indented JSON, atomically."""
    atomic_write(str(path), lambda f: json.dump(results, f, indent=2), mode="w")


def save_figure(figure, path, dpi=110):
    """Saves a matplotlib figure as PNG, atomically."""
    atomic_write(str(path), lambda f: figure.savefig(f, format="png", dpi=dpi))
