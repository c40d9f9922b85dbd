"""Smoke run of `make demo` (`keras_ragkd.demo`): every stage, every metric."""

import json
import os

import pytest

from keras_ragkd import demo

STAGES = ["knowledge base", "teacher", "teacher cache", "distilled student", "plain student",
          "closed book", "evaluation", "save models", "export", "fresh process", "hot swap"]
MODEL_FIELDS = ["exact_match", "token_f1", "by_type", "examples", "count",
                "seconds_per_question", "generator_parameters", "num_docs", "doc_score_scale",
                "latency_seconds", "training", "preset", "preset_megabytes"]


def test_flags_pick_a_preset_and_override_its_budgets():
    args = demo.parse_args([])
    assert args.preset == "default" and args.teacher_generator == "minilm"
    assert args.eval_questions == 300
    full = demo.parse_args(["--full", "--student-seconds", "60"])
    assert (full.preset, full.teacher_seconds, full.student_seconds) == ("full", 1800, 60)
    assert demo.parse_args(["--smoke"]).countries == 10
    for bad in (["--full", "--smoke"], ["--teacher-seconds", "0"], ["--student-generator", "xl"]):
        with pytest.raises(SystemExit):
            demo.parse_args(bad)


@pytest.mark.slow
def test_smoke_run_writes_every_stage_and_metric(tmp_path, capsys):
    metrics = demo.run_demo(demo.parse_args(["--smoke", "--output-dir", str(tmp_path)]))
    printed = capsys.readouterr().out
    for stage in STAGES:
        assert f"=== {stage} ===" in printed
    assert "=== summary ===" in printed and "Targets MISSED" in printed  # tiny models

    run_dir = metrics["run_dir"]
    assert os.path.dirname(run_dir) == str(tmp_path)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["stage_seconds"]) == set(STAGES)
    assert saved["total_seconds"] > 0
    for name in demo.MODEL_NAMES:
        entry = saved["models"][name]
        assert set(MODEL_FIELDS) <= set(entry), name
        assert 0 <= entry["exact_match"] <= 1 and entry["latency_seconds"] > 0
        assert entry["training"]["steps"] > 0 and entry["training"]["curve"]
        assert os.path.isfile(os.path.join(entry["preset"], "config.json"))
    assert saved["models"]["plain_student"]["training"]["steps"] == (
        saved["models"]["distilled_student"]["training"]["steps"])
    train_questions = saved["data"]["questions"]["train"]
    assert 0 <= saved["teacher_cache"]["count"] - train_questions < demo.BATCH_SIZE  # full batches
    assert set(saved["ratios"]) == {
        "student_over_teacher_exact_match", "student_over_teacher_parameters",
        "student_over_teacher_latency", "distilled_minus_plain_exact_match"}
    assert [t["name"] for t in saved["targets"]] == [row[0] for row in demo.target_rows(saved)]
    reworded = saved["reworded"]["distilled_student"]
    assert reworded["count"] > 0 and "by_type" in reworded
    swapped = saved["swapped_capitals"]["distilled_student"]
    assert swapped["countries"] == saved["data"]["countries"]["test"]
    for key in ("followed", "followed_all_wordings", "kept_true_capital"):
        assert 0 <= swapped[key] <= 1
    # The export answered in a process that could not import keras_ragkd,
    # exactly as `generate` does in this one.
    fresh = saved["fresh_process"]
    assert fresh["answers_match"] and fresh["passages_match"]
    assert fresh["keras_ragkd_importable"] is False and fresh["modules_from_repository"] == []
    assert os.path.isfile(os.path.join(saved["export"]["path"], "saved_model.pb"))
    assert set(saved["hot_swap"]) >= {"question", "before", "after", "follows"}
    assert os.path.getsize(os.path.join(run_dir, "demo.png")) > 10_000
