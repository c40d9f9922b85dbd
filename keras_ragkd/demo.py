"""The package's mission end to end on the countryinfo knowledge base.

`make demo` (`python examples/rag_countries.py`, `keras_ragkd.demo.main`) runs,
logging each stage with Keras progress bars:

1. the knowledge base: countryinfo passages (all countries; 80/20 split *by
   country*, so a held-out country's facts are in the index but in no
   training pair), their MiniLM embeddings in a FAISS index, and
   counterfactual training passages (`counterfactual_augment`), so that
   models learn to read rather than memorise;
2. a RAG teacher: the pretrained MiniLM backbone reads question + passage
   (its top transformer layer fine-tuned), a trained copy decoder answers
   (RAG-Token over 2 passages, 3 with `--full`; Adam annealed along a cosine
   over its time budget);
3. its `TeacherCache`: the teacher runs once over the training set, reading
   the student's passages, and its top-k per-token marginals go to disk;
4. a small RAG student distilled from the cache with the `Distiller`
   (α-weighted hard + soft loss, the teacher's mistakes masked out of the soft
   loss);
5. the same student from the same initial weights trained without
   distillation for the same number of steps;
6. a closed-book model (no retrieval: the student's generator, the teacher's
   with `--full` as in the benchmark);
7. evaluation on held-out countries: exact match, token F1, exact match by
   question type, generator parameters and latency per question at batch 1
   (the models timed in turns, in blocks of questions); questions in wordings
   no training template uses; and, for the distilled student, an index in
   which *every* held-out country's capital passage names another held-out
   country's capital (does the answer follow the index?);
8. the models saved as relocatable folders (`save_to_preset`), the distilled
   student exported as a SavedModel, and that export loaded in a fresh
   Python process that cannot import this package (only `tensorflow` and
   `tensorflow_text`), its answers checked against in-process `generate`;
9. a hot swap of the knowledge base (no retraining).

It ends with a summary table (figures beside the targets, misses marked) and
writes `runs/<timestamp>/`: `metrics.json`, `models/<name>/`, the
`distilled_student_savedmodel/`, `indexes/` and `demo.png`.

Budgets: the default fits about 10 minutes on 2 CPU cores; `--full` runs the
configuration behind the RAG benchmark's figures
(`benchmarks/rag_quality_bench.py`: teacher 1,800 s on 3 passages, students
450 s, closed book of the teacher's size 450 s, every held-out question;
one student seed, no ablation students; batches here are always full, so
no step is traced twice); `--smoke` is a run of seconds on a few countries
with tiny models (for tests). Every budget can be overridden
(`--teacher-seconds 300`, ...; `--help`).

`--teacher smollm2` runs the same mission with a pretrained LLM instead
(`keras_ragkd.demo_smollm2`): a LoRA-tuned SmolLM2-135M-Instruct RAG teacher
distilled into a llama student of 1/8 its weights (29–32 minutes measured
on 2 cores, so not the default).

Example:

    python -m keras_ragkd.demo                # or: make demo
    python -m keras_ragkd.demo --teacher-seconds 300 --student-seconds 120
"""

import time

_STARTED = time.monotonic()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd.data.countries import QUESTION_TEMPLATES  # noqa: E402
from keras_ragkd.data.countries import country_passages  # noqa: E402
from keras_ragkd.data.countries import country_questions  # noqa: E402
from keras_ragkd.data.countries import country_split  # noqa: E402
from keras_ragkd.distillation import Distiller  # noqa: E402
from keras_ragkd.distillation import TeacherCache  # noqa: E402
from keras_ragkd.io_utils import atomic_write  # noqa: E402
from keras_ragkd.rag import GENERATOR_SIZES  # noqa: E402
from keras_ragkd.rag import RagPreprocessor  # noqa: E402
from keras_ragkd.rag import RagQuestionAnswerer  # noqa: E402
from keras_ragkd.rag import RetrievalAugmentedGenerator  # noqa: E402
from keras_ragkd.training_budget import TimeCosineDecay  # noqa: E402
from keras_ragkd.training_budget import StepLimit  # noqa: E402
from keras_ragkd.training_budget import TimeLimit  # noqa: E402
from keras_ragkd.rag import build_generator  # noqa: E402
from keras_ragkd.rag import build_rag_question_answerer  # noqa: E402
from keras_ragkd.data import counterfactual_augment  # noqa: E402
from keras_ragkd.rag import PassageTokenTable  # noqa: E402
from keras_ragkd.data import derange_facts  # noqa: E402
from keras_ragkd.rag.evaluation import answer_questions  # noqa: E402
from keras_ragkd.rag.evaluation import evaluate_answers  # noqa: E402
from keras_ragkd.rag.evaluation import follow_rate  # noqa: E402
from keras_ragkd.rag.evaluation import compare_latency  # noqa: E402
from keras_ragkd.rag.evaluation import retrieval_recall  # noqa: E402
from keras_ragkd.rag.evaluation import sample_questions  # noqa: E402
from keras_ragkd.rag.metrics import exact_match  # noqa: E402
from keras_ragkd.retrieval import PassageIndex  # noqa: E402
from keras_ragkd.retrieval import PassageRetriever  # noqa: E402
from keras_ragkd.retrieval import load_minilm_encoder  # noqa: E402
from keras_ragkd.retrieval.passage import as_passages  # noqa: E402
from keras_ragkd.retrieval.passage import passage_text  # noqa: E402
from keras_ragkd.models import load_minilm_tokenizer  # noqa: E402

# Budgets (seconds of training, tracing excluded) and evaluation sizes.
PRESETS = {
    # About 10 minutes on 2 CPU cores.
    "default": dict(teacher_seconds=150, student_seconds=45, closed_book_seconds=20,
                    eval_questions=300, reworded_questions=300, latency_questions=30,
                    fresh_questions=6, countries=0, teacher_generator="minilm",
                    student_generator="small", closed_book_generator="small",
                    teacher_docs=2),
    # The budgets of benchmarks/rag_quality_bench.py's full run.
    "full": dict(teacher_seconds=1800, student_seconds=450, closed_book_seconds=450,
                 eval_questions=0, reworded_questions=0, latency_questions=50,
                 fresh_questions=6, countries=0, teacher_generator="minilm",
                 student_generator="small", closed_book_generator="minilm",
                 teacher_docs=3),
    # Seconds on a few countries with tiny models: checks that every stage runs.
    "smoke": dict(teacher_seconds=2, student_seconds=2, closed_book_seconds=1,
                  eval_questions=0, reworded_questions=0, latency_questions=2,
                  fresh_questions=2, countries=10, teacher_generator="tiny",
                  student_generator="tiny", closed_book_generator="tiny", teacher_docs=2),
}
# The generators by name: `GENERATOR_SIZES`, and the benchmark's teacher.
TEACHER_GENERATOR = dict(GENERATOR_SIZES["minilm"], reader_fine_tune_layers=1)
STUDENT_DOCS = 2
BATCH_SIZE = 32
TEACHER_LEARNING_RATE, STUDENT_LEARNING_RATE, CLOSED_BOOK_LEARNING_RATE = 1e-3, 2e-3, 1e-3
ALPHA, TEMPERATURE, CACHE_TOP_K = 0.8, 1.0, 32
COUNTERFACTUAL_FRACTION = 0.5
TARGETS = {
    "total_seconds": 600.0,
    "teacher_exact_match": 0.85,
    "student_over_teacher_exact_match": 0.9,
    "student_over_teacher_parameters": 0.25,
    "student_over_teacher_latency": 0.5,
}
MODEL_NAMES = ("teacher", "distilled_student", "plain_student", "closed_book")
TEACHERS = ("copy", "smollm2")
RAG_MODEL_NAMES = MODEL_NAMES[:3]
HOT_SWAP = ("France", "What is the capital of France?", "Berlin")


def hard_loss(model):
    """Token cross-entropy on a RAG model's log-probabilities, padding ignored.

    The padding id comes from the model's preprocessor; a `Distiller` reads it
    from the student by itself, a plain `compile` needs it in the loss.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=model.preprocessor.padding_id
    )


def parse_args(argv=None):
    """Parses the demo's flags; budgets default to the chosen preset's."""
    parser = argparse.ArgumentParser(
        prog="keras-ragkd demo", description=__doc__.splitlines()[0],
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true",
                      help="the RAG benchmark's budgets (about 50 minutes on 2 cores)")
    mode.add_argument("--smoke", action="store_true",
                      help="seconds of training on a few countries with tiny models")
    names = {
        "teacher_seconds": (float, "teacher training budget, seconds"),
        "student_seconds": (float, "distilled student's training budget, seconds "
                                   "(the plain student gets its number of steps)"),
        "closed_book_seconds": (float, "closed-book model's training budget, seconds"),
        "eval_questions": (int, "held-out questions scored per model (0: all)"),
        "reworded_questions": (int, "reworded held-out questions scored (0: all)"),
        "latency_questions": (int, "questions timed one by one per model"),
        "fresh_questions": (int, "questions answered by the export in a fresh process"),
        "countries": (int, "use only this many countries (0: all)"),
        "teacher_generator": (str, "teacher generator: minilm (pretrained reader, top "
                                   "layer fine-tuned) or a size: tiny, small, base"),
        "teacher_docs": (int, "passages the teacher reads per question"),
        "student_generator": (str, "student generator size: tiny, small, base"),
        "closed_book_generator": (str, "closed-book generator: minilm or a size"),
    }
    for name, (kind, help_text) in names.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=help_text)
    parser.add_argument("--student-docs", type=int, default=STUDENT_DOCS,
                        help="passages the students read per question")
    parser.add_argument("--teacher", choices=TEACHERS, default=TEACHERS[0],
                        help="copy: this demo's teachers (--teacher-generator); smollm2: "
                             "the pretrained-LLM demo, a SmolLM2-135M RAG teacher distilled "
                             "into a small llama (its flags: --teacher smollm2 --help)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help="weight of the hard-label loss in the distillation loss")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs",
                        help="the run folder is created under it (runs/<timestamp>/)")
    args = parser.parse_args(argv)
    args.preset = "full" if args.full else "smoke" if args.smoke else "default"
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("teacher_seconds", "student_seconds", "closed_book_seconds"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive. "
                         f"Received: {name}={getattr(args, name)}")
    for name in ("teacher_generator", "student_generator", "closed_book_generator"):
        if getattr(args, name) not in GENERATOR_SIZES:
            parser.error(f"--{name.replace('_', '-')} must be one of {sorted(GENERATOR_SIZES)}. "
                         f"Received: {name}={getattr(args, name)!r}")
    if args.latency_questions < 1 or args.fresh_questions < 1:
        parser.error("--latency-questions and --fresh-questions must be at least 1. "
                     f"Received: latency_questions={args.latency_questions}, "
                     f"fresh_questions={args.fresh_questions}")
    return args


def generator_config(name):
    """The generator argument of `build_rag_question_answerer` for a name."""
    return TEACHER_GENERATOR if name == "minilm" else name


# Logging and training.


class Stages:
    """Prints a header per stage and records its wall time."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name):
        stages = self

        class _Stage:
            def __enter__(self):
                print(f"\n=== {name} ===", flush=True)
                self.started = time.monotonic()

            def __exit__(self, *exc_info):
                stages.seconds[name] = round(time.monotonic() - self.started, 1)
                if exc_info[0] is None:
                    print(f"--- {name}: {stages.seconds[name]:.0f} s", flush=True)

        return _Stage()


class TrainingProgress(keras.callbacks.Callback):
    """A Keras progress bar over training steps; records the loss curve.

    Args:
        key: the log entry shown and recorded (e.g. `"student_loss"`).
        steps: the number of steps when known (a step budget), else `None`.
        every: record a curve point every `every` steps.
        verbose: 0 or 1.
    """

    def __init__(self, key="loss", steps=None, every=1, verbose=1):
        super().__init__()
        self.key, self.target, self.every, self.verbose = key, steps, every, verbose
        self.points, self.steps, self.bar = [], 0, None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()
        if self.verbose:
            interval = 0.2 if sys.stdout.isatty() else 10.0
            self.bar = keras.utils.Progbar(self.target, interval=interval,
                                           stateful_metrics=[self.key])

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        value = None if not logs or self.key not in logs else float(logs[self.key])
        if value is not None and self.steps % self.every == 0:
            self.points.append((time.monotonic() - self.started, self.steps, value))
        if self.bar is not None:
            self.bar.update(self.steps, [(self.key, value)] if value is not None else None,
                            finalize=False)
        self.last = value

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.update(self.steps, finalize=True)


def train(model, dataset, limits, key="loss", steps=None):
    """`model.fit` until a limit stops it; returns seconds, steps and curve."""
    progress = TrainingProgress(key, steps=steps)
    started = time.monotonic()
    model.fit(dataset, epochs=1_000_000, verbose=0, shuffle=False,
              callbacks=[*limits, progress])
    return {"seconds": round(time.monotonic() - started, 1), "steps": progress.steps,
            "final_loss": progress.last if progress.steps else None,
            "curve": progress.points}


# Data.


def select_countries(count, seed):
    """The country split, optionally cut to `count` countries (20 % held out)."""
    train, test = country_split(seed=seed)
    if not count:
        return train, test
    if count < 4:
        raise ValueError(f"`countries` must be 0 (all) or at least 4. Received: countries={count}")
    rng = np.random.RandomState(seed)
    n_test = max(2, int(round(0.2 * count)))
    test = sorted(rng.choice(test, n_test, replace=False).tolist())
    train = sorted(rng.choice(train, count - n_test, replace=False).tolist())
    return train, test


def index_with_changes(base, passages, encoder):
    """A Flat index over `passages`, re-embedding only those `base` lacks.

    Passages whose id and text equal one of `base`'s reuse its embedding, so
    swapping a few facts costs a few encoder calls rather than a rebuild.
    """
    old = {p.id: (p.text, row) for row, p in enumerate(base.passages)}
    embeddings = np.zeros((len(passages), base.dim), "float32")
    changed = []
    for row, passage in enumerate(passages):
        text, old_row = old.get(passage["id"], (None, None))
        if text == passage["text"]:
            embeddings[row] = base.embeddings[old_row]
        else:
            changed.append(row)
    if changed:
        records = as_passages([passages[row] for row in changed])
        embeddings[changed] = encoder.encode([passage_text(p) for p in records], verbose=0)
    return PassageIndex.from_embeddings(passages, embeddings, encoder=encoder)


def build_data(args, run_dir):
    """Passages, questions, indexes (saved under `run_dir`) and the preprocessor."""
    train_countries, test_countries = select_countries(args.countries, args.seed)
    countries = set(train_countries) | set(test_countries)
    passages = country_passages(sorted(countries))

    def questions(split, wording="training"):
        return [q for q in country_questions(split, seed=args.seed, wording=wording)
                if q["country"] in countries]

    true_train, test = questions("train"), questions("test")
    reworded = questions("test", wording="reworded")
    train_passages, train_questions = counterfactual_augment(
        passages, true_train, train_countries, fraction=COUNTERFACTUAL_FRACTION, seed=args.seed
    )
    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False
    print(f"Knowledge base: {len(passages)} passages of {len(countries)} countries; "
          f"{len(train_countries)} training countries ({len(train_questions)} questions, "
          f"{COUNTERFACTUAL_FRACTION:.0%} of their passages counterfactual), "
          f"{len(test_countries)} held-out countries ({len(test)} questions). "
          "Embedding the passages with MiniLM:", flush=True)
    index = PassageIndex.build(passages, encoder, verbose=1)
    train_index = index_with_changes(index, train_passages, encoder)
    index.save(os.path.join(run_dir, "indexes", "countries"))
    train_index.save(os.path.join(run_dir, "indexes", "countries_counterfactual"))
    texts = [p["text"] for p in passages + train_passages]
    texts += [q[k] for q in true_train + train_questions + test + reworded
              for k in ("question", "answer")]
    texts.append(HOT_SWAP[2])
    preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
    return {
        "train_countries": train_countries, "test_countries": test_countries,
        "passages": passages, "true_train": true_train, "train_questions": train_questions,
        "test": test, "reworded": reworded, "encoder": encoder, "index": index,
        "train_index": train_index, "preprocessor": preprocessor,
    }


def dataset(model, questions, seed=None):
    """Preprocessed batches of `BATCH_SIZE` `(question, answer)` pairs, all full.

    Every batch has the same shape, so a train step (and the teacher cache's
    pass) is traced once, not again for a last, smaller batch (which costs a
    MiniLM teacher tens of seconds of its budget). With a `seed` the pairs are
    reshuffled each epoch and the last partial batch is dropped (other pairs
    each epoch); without one (the teacher cache's fixed order) the first pairs
    are repeated at the end to fill the last batch, so every pair is cached.
    """
    questions = list(questions)
    if len(questions) < BATCH_SIZE:
        raise ValueError(f"Expected at least {BATCH_SIZE} training questions (one batch). "
                         f"Received: {len(questions)} questions")
    if seed is None and len(questions) % BATCH_SIZE:
        questions += questions[: BATCH_SIZE - len(questions) % BATCH_SIZE]
    pairs = tf.data.Dataset.from_tensor_slices(
        ([q["question"] for q in questions], [q["answer"] for q in questions]))
    if seed is not None:
        pairs = pairs.shuffle(len(questions), seed=seed, reshuffle_each_iteration=True)
    pairs = pairs.batch(BATCH_SIZE, drop_remainder=seed is not None)
    return pairs.map(model.preprocessor, num_parallel_calls=1).prefetch(2)


def closed_book_model(encoder, preprocessor, generator, directory):
    """A generator that sees only the question (one empty passage, no retrieval)."""
    empty = [{"id": "none", "title": "", "text": "."}]
    index = PassageIndex.build(empty, encoder, verbose=0)
    index.save(os.path.join(directory, "indexes", "closed_book"))
    rag = RetrievalAugmentedGenerator(
        encoder, PassageRetriever(index, k=1), build_generator(generator, preprocessor),
        passage_tokens=PassageTokenTable.from_index(index, preprocessor), num_docs=1,
        copy_from_question=True,
    )
    return RagQuestionAnswerer(preprocessor, rag)


# The fresh process: loads the SavedModel without this package.

FRESH_PROCESS = r"""
import json, sys
# This package must not be importable here: block it (and the editable
# install's finder) before anything else is imported.
sys.modules["keras_ragkd"] = None
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
import os
export_path, questions_path, package = sys.argv[1:4]
sys.path[:] = [p for p in sys.path
               if p and not os.path.isfile(os.path.join(p, "keras_ragkd", "__init__.py"))]
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)

with open(questions_path) as f:
    questions = json.load(f)
reloaded = tf.saved_model.load(export_path)
outputs = reloaded.serve(tf.constant(questions))
retrieved = reloaded.retrieve(tf.constant(questions))
try:
    import keras_ragkd  # noqa: F401
    importable = True
except ImportError:
    importable = False
ours = sorted(name for name, module in sys.modules.items() if module is not None
              and (getattr(module, "__file__", None) or "").startswith(package + os.sep))
print(json.dumps({
    "answers": [a.decode("utf-8") for a in outputs["answers"].numpy()],
    "passage_ids": [[p.decode("utf-8") for p in row] for row in outputs["passage_ids"].numpy()],
    "retrieve_passage_ids": [[p.decode("utf-8") for p in row]
                             for row in retrieved["passage_ids"].numpy()],
    "keras_ragkd_importable": importable,
    "modules_from_repository": ours,
    "keras_imported": "keras" in sys.modules,
    "python": sys.executable,
}))
"""


def package_folder():
    """The folder of this `keras_ragkd` package."""
    return os.path.dirname(os.path.abspath(__file__))


def answer_in_fresh_process(export_path, questions, workdir):
    """Runs the export in `python -I` without `keras_ragkd`; returns its JSON."""
    questions_path = os.path.join(workdir, "fresh_questions.json")
    with open(questions_path, "w") as f:
        json.dump(questions, f)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, os.path.abspath(export_path),
         questions_path, package_folder()],
        capture_output=True, text=True, cwd=workdir, env=environment, timeout=600,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            "Loading the SavedModel in a fresh process failed:\n" + completed.stderr[-4000:]
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# Report.


def target_rows(metrics):
    """`(name, figure, target, met)` rows of the issue's targets."""
    models = metrics["models"]
    teacher, student = models["teacher"], models["distilled_student"]
    ratios = metrics["ratios"]
    rows = [
        ("total time, seconds", metrics["total_seconds"], f"<= {TARGETS['total_seconds']:.0f}",
         metrics["total_seconds"] <= TARGETS["total_seconds"]),
        ("teacher held-out EM", teacher["exact_match"], f">= {TARGETS['teacher_exact_match']}",
         teacher["exact_match"] >= TARGETS["teacher_exact_match"]),
        ("distilled EM / teacher EM", ratios["student_over_teacher_exact_match"],
         f">= {TARGETS['student_over_teacher_exact_match']}",
         ratios["student_over_teacher_exact_match"] >= TARGETS["student_over_teacher_exact_match"]),
        ("distilled / teacher generator params", ratios["student_over_teacher_parameters"],
         f"<= {TARGETS['student_over_teacher_parameters']}",
         ratios["student_over_teacher_parameters"] <= TARGETS["student_over_teacher_parameters"]),
        ("distilled / teacher latency", ratios["student_over_teacher_latency"],
         f"<= {TARGETS['student_over_teacher_latency']}",
         ratios["student_over_teacher_latency"] <= TARGETS["student_over_teacher_latency"]),
    ]
    return rows


def _format(value):
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def summary_table(metrics):
    """The summary as text: models, other measurements, stage times, targets."""
    lines = []
    models = metrics["models"]
    types = sorted({t for m in models.values() for t in m["by_type"]})
    labels = {"country_of_capital": "cap.->country"}
    lines.append(f"Held-out countries: {metrics['data']['countries']['test']} "
                 f"({metrics['data']['questions']['test_scored']} questions scored).")
    header = (f"{'model':<18} {'EM':>6} {'F1':>6} {'gen. params':>12} {'docs':>4} "
              f"{'latency':>9} {'steps':>6} {'train s':>7}")
    lines += [header, "-" * len(header)]
    for name in MODEL_NAMES:
        m = models[name]
        lines.append(
            f"{name:<18} {m['exact_match']:>6.3f} {m['token_f1']:>6.3f} "
            f"{m['generator_parameters']:>12,} {m['num_docs']:>4} "
            f"{1000 * m['latency_seconds']:>6.1f} ms {m['training']['steps']:>6} "
            f"{m['training']['seconds']:>7.0f}"
        )
    lines.append("")
    header = f"{'EM by type':<18} " + " ".join(f"{labels.get(t, t):>13}" for t in types)
    lines += [header, "-" * len(header)]
    for name in MODEL_NAMES:
        by_type = models[name]["by_type"]
        lines.append(f"{name:<18} " + " ".join(
            f"{by_type[t]:>13.3f}" if t in by_type else f"{'-':>13}" for t in types))
    lines.append("")
    reworded_types = sorted({t for m in metrics["reworded"].values() for t in m["by_type"]})
    header = (f"{'not targets':<18} {'reworded':>8} "
              + " ".join(f"{labels.get(t, t):>13}" for t in reworded_types)
              + f" {'swapped: follows':>16} {'keeps true':>10}")
    lines += [header, "-" * len(header)]
    for name in RAG_MODEL_NAMES:
        reworded = metrics["reworded"][name]
        swapped = metrics["swapped_capitals"].get(name)
        lines.append(
            f"{name:<18} {reworded['exact_match']:>8.3f} "
            + " ".join(f"{reworded['by_type'].get(t, float('nan')):>13.3f}"
                       for t in reworded_types)
            + (f" {swapped['followed']:>16.3f} {swapped['kept_true_capital']:>10.3f}"
               if swapped else f" {'-':>16} {'-':>10}")
        )
    swapped = metrics["swapped_capitals"]["distilled_student"]
    lines.append(
        f"reworded: EM on {metrics['reworded']['distilled_student']['count']} held-out "
        "questions in wordings no training template uses. swapped: every held-out "
        "country's capital passage names another held-out country's capital; follows: share "
        f"of the {swapped['countries']} countries whose 'What is the capital of X?' is "
        f"answered with the swapped capital ({swapped['followed_all_wordings']:.3f} over all "
        f"{swapped['questions']} capital questions); keeps true: share answered with the "
        "true capital."
    )
    fresh, swap = metrics["fresh_process"], metrics["hot_swap"]
    lines.append(
        f"SavedModel in a fresh process (keras_ragkd importable there: "
        f"{fresh['keras_ragkd_importable']}): {fresh['matching_answers']}/"
        f"{len(fresh['questions'])} answers equal to in-process generate; retrieved "
        f"passages equal: {fresh['passages_match']}."
    )
    lines.append(f"Hot swap: {swap['question']!r} -> {swap['before']!r} with the true index, "
                 f"{swap['after']!r} once {swap['country']}'s capital passage names "
                 f"{swap['new_capital']}.")
    lines.append(f"Stage times (s): start-up and imports {metrics['startup_seconds']:.0f}, "
                 + ", ".join(f"{name} {seconds:.0f}"
                             for name, seconds in metrics["stage_seconds"].items()))
    lines.append("")
    header = f"{'target':<38} {'figure':>8} {'target':>8}  status"
    lines += [header, "-" * len(header)]
    for name, value, target, met in target_rows(metrics):
        lines.append(f"{name:<38} {_format(value):>8} {target:>8}  {'met' if met else 'MISSED'}")
    missed = [name for name, _, _, met in target_rows(metrics) if not met]
    lines.append("All targets met." if not missed else "Targets MISSED: " + "; ".join(missed) + ".")
    return "\n".join(lines)


def plot(metrics, path):
    """Training curves, EM bars and latency bars in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = metrics["models"]
    names = list(MODEL_NAMES)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for name in names:
        curve = models[name]["training"]["curve"]
        if curve:
            axes[0].plot([p[1] for p in curve], [p[2] for p in curve], label=name)
    axes[0].set_title("Training loss (running mean within each epoch)")
    axes[0].set_xlabel("steps")
    axes[0].set_yscale("log")
    axes[0].legend()
    width = 0.27
    positions = np.arange(len(names))
    groups = [
        ("held-out EM", models, "exact_match", "tab:blue"),
        ("reworded EM", metrics["reworded"], "exact_match", "tab:cyan"),
        ("swapped capitals followed", metrics["swapped_capitals"], "followed", "tab:green"),
    ]
    for offset, (label, results, key, color) in zip((-width, 0.0, width), groups):
        shown = [i for i, n in enumerate(names) if n in results]
        bars = axes[1].bar(positions[shown] + offset, [results[names[i]][key] for i in shown],
                           width, label=label, color=color)
        axes[1].bar_label(bars, fmt="%.2f", fontsize=7)
    axes[1].set_xticks(positions, names)
    axes[1].axhline(TARGETS["teacher_exact_match"], color="gray", linestyle="--", linewidth=1)
    axes[1].set_ylim(0, 1.1)
    axes[1].legend(fontsize=8, loc="upper right")
    axes[1].set_title("Held-out countries (dashed: teacher EM target)")
    bars = axes[2].bar(names, [1000 * models[n]["latency_seconds"] for n in names],
                       color="tab:orange")
    axes[2].bar_label(bars, fmt="%.0f")
    axes[2].set_title("Latency per question, batch 1 (ms)")
    for axis in axes[1:]:
        axis.tick_params(axis="x", rotation=20)
    fig.suptitle(f"keras_ragkd demo ({metrics['config']['preset']} budgets): "
                 f"teacher {models['teacher']['training']['seconds']:.0f} s, students "
                 f"{models['distilled_student']['training']['seconds']:.0f} s of training")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def write_json(metrics, path):
    atomic_write(path, lambda f: json.dump(metrics, f, indent=2), mode="w")


# The run.


def process_seconds():
    """Seconds since this Python process started (Linux), else since this module loaded.

    The demo's time target is the wall time of `make demo`, interpreter start
    and imports included.
    """
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _STARTED


def make_run_dir(output_dir):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, suffix = os.path.join(output_dir, stamp), 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(output_dir, f"{stamp}-{suffix}")
    os.makedirs(path)
    return os.path.abspath(path)


def run_demo(args, started=None):
    """Runs every stage; returns the metrics (also in `metrics.json`).

    Args:
        args: the flags, from `parse_args`.
        started: the `time.monotonic()` the total time counts from (default:
            now; `main` passes the process's start, so imports count too).
    """
    called = time.monotonic()
    started = called if started is None else started
    run_dir = make_run_dir(args.output_dir)
    print(f"keras_ragkd demo ({args.preset}): writing {run_dir}", flush=True)
    keras.utils.set_random_seed(args.seed)
    stages = Stages()
    metrics = {
        "config": dict(vars(args), targets=TARGETS, teacher_generator_config=generator_config(
            args.teacher_generator), batch_size=BATCH_SIZE,
            learning_rates={"teacher": TEACHER_LEARNING_RATE, "student": STUDENT_LEARNING_RATE,
                            "closed_book": CLOSED_BOOK_LEARNING_RATE},
            cache_top_k=CACHE_TOP_K, counterfactual_fraction=COUNTERFACTUAL_FRACTION),
        "run_dir": run_dir,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "models": {},
    }
    models = metrics["models"]
    workdir = tempfile.mkdtemp(prefix="keras_ragkd_demo_")
    try:
        with stages("knowledge base"):
            data = build_data(args, run_dir)
            index, train_index, encoder = data["index"], data["train_index"], data["encoder"]
            preprocessor = data["preprocessor"]
            evaluation = sample_questions(data["test"], args.eval_questions, args.seed)
            timing = evaluation[: args.latency_questions]
            recall = {f"at_{k}": retrieval_recall(index, evaluation, k)
                      for k in sorted({args.teacher_docs, args.student_docs})}
            metrics["data"] = {
                "passages": len(data["passages"]),
                "countries": {"train": len(data["train_countries"]),
                              "test": len(data["test_countries"])},
                "questions": {"train": len(data["train_questions"]), "test": len(data["test"]),
                              "test_scored": len(evaluation),
                              "reworded": len(data["reworded"])},
                "retrieval_recall": recall,
            }
            print("Retrieval recall of the gold passage on the scored held-out questions: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in recall.items()),
                  flush=True)

        with stages("teacher"):
            teacher = build_rag_question_answerer(
                train_index, encoder, preprocessor, generator_config(args.teacher_generator),
                num_docs=args.teacher_docs,
            )
            print(f"RAG teacher: {args.teacher_generator} generator "
                  f"({teacher.rag.generator.count_params():,} parameters), "
                  f"{args.teacher_docs} passages, training for {args.teacher_seconds:.0f} s "
                  "(cosine learning-rate decay over the budget):", flush=True)
            teacher.compile(optimizer=keras.optimizers.Adam(TEACHER_LEARNING_RATE))
            teacher_training = train(teacher, dataset(teacher, data["train_questions"], 1), [
                TimeLimit(args.teacher_seconds),
                TimeCosineDecay(TEACHER_LEARNING_RATE, args.teacher_seconds),
            ])

        # The teacher reads the student's passages (its own top ones) into the
        # cache, so its marginal mixes only passages the student can copy from.
        with stages("teacher cache"):
            fixed_order = dataset(teacher, data["train_questions"])
            cache_teacher = teacher.with_index(train_index, num_docs=args.student_docs)
            print(f"Teacher cache: the teacher's top-{CACHE_TOP_K} per-token marginals over "
                  f"{len(data['train_questions'])} training answers, reading "
                  f"{args.student_docs} passages:", flush=True)
            cache = TeacherCache.build(
                cache_teacher, fixed_order, os.path.join(workdir, "teacher_cache"),
                top_k=CACHE_TOP_K, temperature=args.temperature, verbose=1,
            )

        def student_from(initial_weights):
            student = build_rag_question_answerer(
                train_index, encoder, preprocessor, args.student_generator,
                num_docs=args.student_docs,
            )
            student.rag.generator.set_weights(initial_weights)
            return student

        with stages("distilled student"):
            keras.utils.set_random_seed(args.seed + 1)
            student = build_rag_question_answerer(
                train_index, encoder, preprocessor, args.student_generator,
                num_docs=args.student_docs,
            )
            initial_weights = student.rag.generator.get_weights()
            print(f"Student: {args.student_generator} generator "
                  f"({student.rag.generator.count_params():,} parameters), "
                  f"{args.student_docs} passages, distilled from the cache (alpha {args.alpha}, "
                  f"T {args.temperature}, teacher's mistakes masked) for "
                  f"{args.student_seconds:.0f} s:", flush=True)
            distiller = Distiller(None, student, alpha=args.alpha, temperature=args.temperature,
                                  mask_teacher_errors=True)
            distiller.compile(optimizer=keras.optimizers.Adam(STUDENT_LEARNING_RATE),
                              loss=hard_loss(student))
            cached = cache.attach(fixed_order).unbatch().shuffle(
                cache.count, seed=args.seed + 1, reshuffle_each_iteration=True,
            ).batch(BATCH_SIZE, drop_remainder=True).apply(
                tf.data.experimental.assert_cardinality(cache.count // BATCH_SIZE))
            distilled_training = train(distiller, cached, [
                TimeLimit(args.student_seconds),
                TimeCosineDecay(STUDENT_LEARNING_RATE, args.student_seconds),
            ], key="student_loss")
            steps = distilled_training["steps"]

        with stages("plain student"):
            print(f"The same student from the same initial weights, no distillation, "
                  f"{steps} steps (cosine decay over them):", flush=True)
            plain = student_from(initial_weights)
            plain.compile(
                optimizer=keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(STUDENT_LEARNING_RATE, steps)),
                loss=hard_loss(plain),
            )
            plain_training = train(plain, dataset(plain, data["train_questions"], args.seed + 1),
                                   [StepLimit(steps)], steps=steps)

        with stages("closed book"):
            closed = closed_book_model(encoder, preprocessor,
                                       generator_config(args.closed_book_generator), run_dir)
            print(f"Closed book: a {args.closed_book_generator} generator "
                  f"({closed.rag.generator.count_params():,} parameters) on the question "
                  "alone (no retrieval), trained on the true training facts for "
                  f"{args.closed_book_seconds:.0f} s:", flush=True)
            closed.compile(optimizer=keras.optimizers.Adam(CLOSED_BOOK_LEARNING_RATE))
            closed_training = train(closed, dataset(closed, data["true_train"], 3),
                                    [TimeLimit(args.closed_book_seconds)])

        evaluators = {
            "teacher": (teacher.with_index(index), teacher_training),
            "distilled_student": (student.with_index(index), distilled_training),
            "plain_student": (plain.with_index(index), plain_training),
            "closed_book": (closed, closed_training),
        }
        with stages("evaluation"):
            for name, (model, training) in evaluators.items():
                print(f"{name}: {len(evaluation)} held-out questions", flush=True)
                entry = evaluate_answers(model, evaluation, verbose=1)
                entry["generator_parameters"] = int(model.rag.generator.count_params())
                entry["num_docs"] = model.rag.num_docs
                entry["doc_score_scale"] = float(model.rag.doc_score_scale.numpy())
                entry["training"] = training
                models[name] = entry
                print(f"{name}: EM {entry['exact_match']:.3f}, F1 {entry['token_f1']:.3f}; "
                      "by type " + ", ".join(f"{t} {v:.2f}" for t, v in entry["by_type"].items()),
                      flush=True)
            print(f"Latency: {len(timing)} questions one at a time, the models taking turns "
                  "in blocks of a third of them", flush=True)
            latencies = compare_latency({n: m for n, (m, _) in evaluators.items()}, timing)
            for name, seconds in latencies.items():
                models[name]["latency_seconds"] = seconds
            print("Latency per question at batch 1: " + ", ".join(
                f"{n} {1000 * s:.1f} ms" for n, s in latencies.items()), flush=True)
            distilled = evaluators["distilled_student"][0]
            reworded = sample_questions(data["reworded"], args.reworded_questions, args.seed)
            metrics["reworded"] = {}
            for name in RAG_MODEL_NAMES:
                print(f"{name}: {len(reworded)} reworded held-out questions", flush=True)
                entry = evaluate_answers(evaluators[name][0], reworded, verbose=1)
                metrics["reworded"][name] = entry
                print(f"{name}: reworded EM {entry['exact_match']:.3f}; by type "
                      + ", ".join(f"{t} {v:.2f}" for t, v in entry["by_type"].items()),
                      flush=True)
            swapped = swapped_capitals(distilled, derange_capitals(data, args.seed))
            metrics["swapped_capitals"] = {"distilled_student": swapped}
            print(f"distilled_student, every held-out capital passage naming another held-out "
                  f"capital: the answer follows the index for {swapped['followed']:.2f} of "
                  f"{swapped['countries']} countries (all wordings "
                  f"{swapped['followed_all_wordings']:.2f}; true capital kept "
                  f"{swapped['kept_true_capital']:.2f})", flush=True)

        with stages("save models"):
            for name, (model, _) in evaluators.items():
                path = os.path.join(run_dir, "models", name)
                model.save_to_preset(path)
                models[name]["preset"] = path
                models[name]["preset_megabytes"] = round(folder_bytes(path) / 2**20, 1)
            print("Saved " + ", ".join(f"models/{n}/ ({models[n]['preset_megabytes']:.0f} MB)"
                                       for n in evaluators), flush=True)

        export_path = os.path.join(run_dir, "distilled_student_savedmodel")
        with stages("export"):
            distilled.export(export_path)
            metrics["export"] = {"path": export_path,
                                 "megabytes": round(folder_bytes(export_path) / 2**20, 1)}
            print(f"Exported the distilled student: {export_path} "
                  f"({metrics['export']['megabytes']:.0f} MB)", flush=True)

        with stages("fresh process"):
            metrics["fresh_process"] = fresh_process_check(
                distilled, export_path, data["test"], args.fresh_questions, args.seed, workdir)

        with stages("hot swap"):
            metrics["hot_swap"] = hot_swap(distilled, data)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    metrics["ratios"] = student_ratios(models)
    metrics["teacher_cache"] = {"count": cache.count, "top_k": CACHE_TOP_K,
                                "seconds": stages.seconds["teacher cache"]}
    metrics["stage_seconds"] = stages.seconds
    metrics["startup_seconds"] = round(called - started, 1)
    plot(metrics, os.path.join(run_dir, "demo.png"))
    metrics["total_seconds"] = round(time.monotonic() - started, 1)
    metrics["targets"] = [
        {"name": name, "figure": value, "target": target, "met": bool(met)}
        for name, value, target, met in target_rows(metrics)
    ]
    write_json(metrics, os.path.join(run_dir, "metrics.json"))
    print("\n=== summary ===")
    print(summary_table(metrics))
    print(f"\nWrote {run_dir}/: metrics.json, demo.png, models/, distilled_student_savedmodel/, "
          "indexes/", flush=True)
    return metrics


def student_ratios(models):
    """The distilled student against the teacher (EM, parameters, latency) and plain."""
    teacher, student = models["teacher"], models["distilled_student"]
    return {
        "student_over_teacher_exact_match":
            student["exact_match"] / max(teacher["exact_match"], 1e-9),
        "student_over_teacher_parameters":
            student["generator_parameters"] / teacher["generator_parameters"],
        "student_over_teacher_latency": student["latency_seconds"] / teacher["latency_seconds"],
        "distilled_minus_plain_exact_match":
            student["exact_match"] - models["plain_student"]["exact_match"],
    }


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def derange_capitals(data, seed):
    """An index in which every held-out capital passage names another held-out capital."""
    capital_questions = [q for q in data["test"] if q["type"] == "capital"]
    passages, questions = derange_facts(data["passages"], capital_questions,
                                        data["test_countries"], seed=seed)
    return {"index": index_with_changes(data["index"], passages, data["encoder"]),
            "questions": questions}


def swapped_capitals(model, swapped):
    """How often `model` answers a held-out capital question from the deranged index."""
    questions = swapped["questions"]
    predictions = answer_questions(model.with_index(swapped["index"]), questions)
    standard = QUESTION_TEMPLATES["capital"][0]
    first = [i for i, q in enumerate(questions)
             if q["question"] == standard.format(country=q["country"])]
    return {
        "countries": len(first),
        "questions": len(questions),
        # Share of held-out countries whose "What is the capital of X?" answer
        # is the capital their passage now names.
        "followed": follow_rate([questions[i] for i in first], [predictions[i] for i in first]),
        "followed_all_wordings": follow_rate(questions, predictions),
        "kept_true_capital": follow_rate(questions, predictions, key="original_answer"),
        "examples": [{"question": q["question"], "swapped_answer": q["answer"],
                      "true_answer": q["original_answer"], "predicted": p}
                     for q, p in list(zip(questions, predictions))[:6]],
    }


def fresh_process_check(model, export_path, test, count, seed, workdir):
    """The export answers a few held-out questions in `python -I` without this package."""
    questions = [q["question"] for q in sample_questions(test, count, seed + 7)]
    in_process = model.generate(questions)
    in_process_ids = [[p["id"] for p in row] for row in model.retrieve(questions)]
    result = answer_in_fresh_process(export_path, questions, workdir)
    matching = sum(a == b for a, b in zip(result["answers"], in_process))
    passages_match = [[p for p in row if p] for row in result["passage_ids"]] == in_process_ids
    check = {
        "questions": questions,
        "answers": result["answers"],
        "in_process_answers": in_process,
        "matching_answers": matching,
        "answers_match": matching == len(questions),
        "passages_match": passages_match,
        "keras_ragkd_importable": result["keras_ragkd_importable"],
        "modules_from_repository": result["modules_from_repository"],
        "keras_imported": result["keras_imported"],
    }
    for question, answer, expected in zip(questions, result["answers"], in_process):
        print(f"  {question!r}: fresh process {answer!r}, in process {expected!r}"
              f"{'' if answer == expected else '  <- DIFFERENT'}")
    print(f"Fresh process (python -I, keras_ragkd importable: "
          f"{result['keras_ragkd_importable']}): {matching}/{len(questions)} answers equal "
          f"to in-process generate; retrieved passages equal: {passages_match}", flush=True)
    return check


def hot_swap(model, data):
    """Rewrites one capital passage; the same model answers from the new index."""
    country, question, new_capital = HOT_SWAP
    passages = data["passages"]
    if not any(p["title"] == country for p in passages):
        country = data["test_countries"][0]
        question = f"What is the capital of {country}?"
    passage_id = next(p["id"] for p in passages if p["title"] == country and
                      p["id"].endswith("/capital"))
    swapped_passages = [
        dict(p, text=f"The capital of {country} is {new_capital}.") if p["id"] == passage_id
        else p for p in passages
    ]
    swapped = model.with_index(index_with_changes(data["index"], swapped_passages,
                                                  data["encoder"]))
    before, after = model.generate([question])[0], swapped.generate([question])[0]
    top = swapped.retrieve([question])[0][0]
    print(f"Hot swap: {question!r} -> {before!r} with the true index, {after!r} with an index "
          f"where {country}'s capital passage says {new_capital} (no retraining; top passage "
          f"P(z|x)={top['probability']:.2f}: {top['text']!r})", flush=True)
    return {"country": country, "question": question, "new_capital": new_capital,
            "before": before, "after": after, "follows": bool(exact_match(after, new_capital))}


def main(argv=None):
    """Runs the demo; returns 0 (an exit status: missed targets are reported, not errors).

    `--teacher smollm2` runs the pretrained-LLM demo instead
    (`keras_ragkd.demo_smollm2`, which parses the other flags).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    choice = argparse.ArgumentParser(prog="keras-ragkd demo", add_help=False)
    choice.add_argument("--teacher", choices=TEACHERS, default=TEACHERS[0])
    known, rest = choice.parse_known_args(argv)
    if known.teacher == "smollm2":
        from keras_ragkd import demo_smollm2

        return demo_smollm2.main(rest)
    args = parse_args(argv)
    run_demo(args, started=time.monotonic() - process_seconds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
