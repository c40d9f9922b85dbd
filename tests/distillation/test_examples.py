"""Smoke test of the distillation example that `make demo` runs."""

import importlib.util
import pathlib

import pytest

EXAMPLE = (
    pathlib.Path(__file__).resolve().parents[2] / "examples" / "distill_fashion_mnist.py"
)


@pytest.mark.slow
def test_image_example_quick_run_reports_all_three_accuracies(capsys):
    spec = importlib.util.spec_from_file_location("distill_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--quick"])
    printed = capsys.readouterr().out
    assert "teacher accuracy" in printed and "distilled (ours)" in printed
    assert results["teacher_accuracy"] > 0.9
    assert results["student_params"] < results["teacher_params"] / 20
    for key in ("scratch_accuracy", "distilled_accuracy"):
        assert 0.5 < results[key] <= 1.0
