"""Smoke run of `keras-ragkd demo --teacher smollm2` (`keras_ragkd.demo_smollm2`)."""

import json
import os

import pytest

from keras_ragkd import demo
from keras_ragkd import demo_smollm2

STAGES = ["knowledge base", "teacher", "teacher cache", "distilled student", "plain student",
          "evaluation", "export", "fresh process", "hot swap"]


def test_flags_pick_a_preset_and_reject_bad_budgets():
    args = demo_smollm2.parse_args([])
    assert (args.preset, args.teacher_seconds, args.student_steps) == ("default", 900, 300)
    smoke = demo_smollm2.parse_args(["--smoke", "--student-steps", "7"])
    assert (smoke.preset, smoke.countries, smoke.student_steps) == ("smoke", 10, 7)
    for bad in (["--teacher-seconds", "0"], ["--student-steps", "-1"],
                ["--train-questions", "3"]):
        with pytest.raises(SystemExit):
            demo_smollm2.parse_args(bad)


def test_the_demo_dispatches_on_its_teacher_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        demo.main(["--teacher", "smollm2", "--help"])
    assert exited.value.code == 0
    assert "keras-ragkd demo --teacher smollm2" in capsys.readouterr().out
    assert demo.parse_args(["--teacher", "copy"]).teacher == "copy"
    with pytest.raises(SystemExit):
        demo.main(["--teacher", "gpt"])


# Minutes of graph tracing (a RAG train step, a cache pass, three generate
# functions, an export) even with a tiny teacher: more than `make test`'s
# budget allows, so `make bench-llm` runs it (`pytest -m llm_demo`).
@pytest.mark.slow
@pytest.mark.llm_demo
def test_smoke_run_trains_distils_exports_and_reports(tmp_path, capsys):
    metrics = demo_smollm2.run_demo(
        demo_smollm2.parse_args(["--smoke", "--output-dir", str(tmp_path)]))
    printed = capsys.readouterr().out
    for stage in STAGES:
        assert f"=== {stage} ===" in printed
    assert "=== summary ===" in printed and "distilled / teacher" in printed

    with open(os.path.join(metrics["run_dir"], "metrics.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["stage_seconds"]) == set(STAGES)
    for name in demo_smollm2.MODEL_NAMES:
        entry = saved["models"][name]
        assert 0 <= entry["exact_match"] <= 1 and 0 <= entry["reworded_exact_match"] <= 1
        assert entry["latency_seconds"] > 0 and entry["training"]["steps"] > 0
        assert 0 <= entry["swapped_capitals"]["followed"] <= 1
    models = saved["models"]
    assert models["distilled_student"]["training"]["steps"] == 4
    assert models["plain_student"]["training"]["steps"] == 4
    assert saved["ratios"]["student_over_teacher_parameters"] < 1  # the tiny teacher's student
    assert models["distilled_student"]["num_docs"] == 1 and models["teacher"]["num_docs"] == 2
    assert saved["teacher_cache"]["bytes_per_token"] > 0
    fresh = saved["fresh_process"]
    assert fresh["answers_match"] and fresh["keras_ragkd_importable"] is False
    assert os.path.isfile(os.path.join(metrics["run_dir"], "distilled_student_savedmodel",
                                       "saved_model.pb"))
    assert set(saved["hot_swap"]) >= {"question", "before", "after", "follows"}
