"""SmolLM2-135M-Instruct as a RAG generator: closed book, zero-shot, LoRA teacher.

Everything runs side by side in one process on the countryinfo knowledge base
(80/20 split by country; the held-out countries' passages are in the index,
their facts in no training pair), scored on held-out countries (all question
types) and on reworded questions (`country_questions(wording="reworded")`):

- closed-book SmolLM2 (the chat prompt holds the question only);
- zero-shot SmolLM2 RAG (MiniLM retrieval, 2 passages, RAG-Token greedy
  decoding with the KV cache): exact match and "answer contained";
- the LoRA-fine-tuned SmolLM2 RAG teacher (`build_smollm2_rag_teacher`: rank-8 LoRA
  on the query/value projections, trained with `model.fit` on the training
  countries with counterfactual passages for half their facts, so it reads
  and answers in the short form; only the LoRA weights and the
  passage-posterior scale train). Its training questions include the
  numeric ones (population, area: `NUMERIC_QUESTION_TYPES`), whose answers
  are the bare numbers the passages give with a unit, so it learns to leave
  units out (the element knowledge base asks for masses and densities); the
  held-out figures are on the default (entity) types, the numeric ones
  scored apart;
- swapped facts: every held-out country's capital passage names another
  held-out country's capital; the share of answers that follow the index;
- the issue-4 small copy-generator teacher (`rag_quality_bench`'s MiniLM
  reader + copy decoder) as the peer on the same questions;
- speed against the machine: a TF matmul's GFLOP/s (float32, bfloat16),
  LoRA training, prefill and decoding throughput in tokens/s and as a share
  of that figure (`FLOPS_PER_TOKEN`: 2 × the 106.2 M transformer weights per
  prompt token, 4 × per LoRA training token, 2 × 134.5 M per decoded token),
  generate latency at batch 1 and 32, peak memory (max RSS).

The full run writes the teacher's LoRA weights and settings to
`benchmarks/results/llm_rag_teacher/` (7 MB; `load_llm_teacher` rebuilds
it on top of `load_smollm2()`), for the distillation and element benches
(a `--quick` or otherwise customised run writes `llm_rag_teacher_quick/` or
`llm_rag_teacher_custom/` instead, leaving that one in place);
the folder is committed with the other results, so those benches run from a
clean clone without the teacher's 30-40 minutes of training first.

Writes `benchmarks/results/llm_rag_bench.json` and `.png`
(`llm_rag_bench_quick.*` with `--quick`). Run:
`python benchmarks/llm_rag_bench.py --quick` (4 minutes of LoRA training,
small question samples; sized for 15 minutes on an idle 2-core machine, it
took about 75 minutes on a 2-core machine shared with other jobs, load ~13:
tracing the 30-layer train step alone took 14 minutes there) or without
`--quick` (30 minutes of training, every held-out question).
`--dtype mixed_bfloat16` computes in bfloat16; `--levers` also times
float32 vs bfloat16 and XLA on two SmolLM2-width layers;
`--load-teacher DIR` evaluates a saved teacher instead of training one.
"""

import argparse
import json
import os
import resource
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.rag.smollm2_recipe import PREPROCESSOR_SETTINGS
from keras_ragkd.rag.smollm2_recipe import TEACHER
from keras_ragkd.rag.smollm2_recipe import build_smollm2_rag_teacher
from keras_ragkd.rag.smollm2_recipe import smollm2_rag_preprocessor
from keras_ragkd.data import DEFAULT_QUESTION_TYPES
from keras_ragkd.data import NUMERIC_QUESTION_TYPES
from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.io_utils import write_folder
from keras_ragkd.models import load_smollm2
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.training_budget import TimeCosineDecay
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.rag import build_causal_lm_rag_question_answerer
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.data import counterfactual_augment
from keras_ragkd.data import derange_facts
from keras_ragkd.rag.evaluation import answer_questions
from keras_ragkd.rag.evaluation import follow_rate
from keras_ragkd.rag.evaluation import retrieval_recall
from keras_ragkd.rag.evaluation import sample_questions
from keras_ragkd.rag.evaluation import score_answers
from keras_ragkd.rag.metrics import normalize_answer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.retrieval.passage import as_passages
from keras_ragkd.retrieval.passage import passage_text
from keras_ragkd.models import load_minilm_tokenizer
from rag_quality_bench import TEACHER_DOCS as PEER_DOCS
from rag_quality_bench import TEACHER_GENERATOR as PEER_GENERATOR
from rag_quality_bench import TEACHER_LEARNING_RATE as PEER_LEARNING_RATE
from results_io import save_figure
from results_io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TEACHER_DIR = os.path.join(RESULTS, "llm_rag_teacher")
FULL = dict(train_seconds=1800, peer_seconds=600, eval_questions=0, reworded_questions=0,
            swapped_questions=0, baseline_questions=192, latency_questions=5)
QUICK = dict(train_seconds=240, peer_seconds=60, eval_questions=64, reworded_questions=32,
             swapped_questions=32, baseline_questions=32, latency_questions=3)
# The teacher's training question types: the entity ones and the numeric ones.
TRAIN_TYPES = DEFAULT_QUESTION_TYPES + NUMERIC_QUESTION_TYPES
EVAL_BATCH = 32
SENTENCE_LENGTH = 32  # Generated tokens for the (untuned) sentence answers.
PARAMETERS = 134.5e6
# FLOPs per token, from SmolLM2's shapes: its 30 transformer layers hold
# 106.2 M weights, the tied embedding 28.3 M (49,152 x 576). A prefill runs the
# layers only (2 x 106.2 M per token; logits are not needed); a LoRA training
# step runs them forward and back to the activations (the frozen weights get
# no gradient: 4 x 106.2 M per token; the LoRA weights' own share is
# negligible and the answer positions' logits are left out, so the share is a
# lower bound); a decoding step also computes the logits (2 x 134.5 M).
TRANSFORMER_PARAMETERS = 106.2e6
FLOPS_PER_TOKEN = {"training": 4 * TRANSFORMER_PARAMETERS, "prefill": 2 * TRANSFORMER_PARAMETERS,
                   "decoding": 2 * PARAMETERS}
# The machine's matmul GFLOP/s measured on an idle 2-core CPU (issue 17); the
# bench re-measures, but on a shared machine its own figure is lower.
REFERENCE_GFLOPS = {"float32": 205.0, "bfloat16": 409.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (~15 min)")
    for name in FULL:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-peer", action="store_true", help="no issue-4 teacher")
    parser.add_argument("--skip-baselines", action="store_true",
                        help="no closed-book / zero-shot SmolLM2 (32-token sentences: the "
                             "slowest part of a run)")
    parser.add_argument("--load-teacher", default=None,
                        help="a `save_llm_teacher` folder: evaluate it, skip the baselines "
                             "and training")
    parser.add_argument("--levers", action="store_true",
                        help="also time float32 vs bfloat16, XLA or not, on two SmolLM2-width "
                             "layers (`lever_timings`, ~1-5 min)")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    args.mode = "quick" if args.quick else "full"
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif getattr(args, name) != value:
            args.mode = "custom"
    if args.dtype != "float32" or args.skip_peer or args.skip_baselines or args.load_teacher:
        args.mode = "custom"
    return args


def matmul_gflops(dtype, size=2048, repeats=8):
    """GFLOP/s of a TF `size`² matmul in `dtype` (the machine's figure)."""
    a = tf.random.normal([size, size], dtype="float32")
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul(a).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def _lora_gradient_step(backbone):
    """A step: the gradient of a scalar of the backbone's output w.r.t. its trainable weights."""

    def step(inputs):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(tf.cast(backbone(inputs), "float32") ** 2)
        gradients = tape.gradient(value, backbone.trainable_variables)
        return tf.add_n([tf.reduce_sum(g) for g in gradients])

    return step


def lever_timings(rows=16, length=72, num_layers=2, rounds=3):
    """LoRA train-step time of SmolLM2-width llama layers: float32 vs bfloat16, XLA or not.

    A `num_layers`-layer backbone of SmolLM2's width (hidden 576, FFN 1536,
    9/3 heads) with rank-8 LoRA, `rows × length` tokens a step, the gradient
    of a scalar of its output with respect to the LoRA weights; the four
    settings are timed in turns (`rounds` times each, after a warm-up), so a
    load change on a shared machine slows them alike.

    Returns:
        A dict of setting → `{"seconds", "tokens_per_second",
        "share_of_idle_reference"}` (4 × layer weights FLOPs per token).
    """
    import keras_hub

    settings = {(dtype, jit): None for dtype in ("float32", "mixed_bfloat16")
                for jit in (False, True)}
    token_ids = tf.random.uniform([rows, length], 0, 1024, "int32")
    inputs = {"token_ids": token_ids, "padding_mask": tf.ones([rows, length], "bool")}
    for dtype, jit in settings:
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.Llama3Backbone(
            vocabulary_size=1024, num_layers=num_layers, num_query_heads=9,
            num_key_value_heads=3, hidden_dim=576, intermediate_dim=1536, dtype=dtype)
        backbone.enable_lora(TEACHER["lora_rank"])
        weights = backbone.trainable_variables
        layer_parameters = sum(int(np.prod(w.shape)) for layer in backbone.transformer_layers
                               for w in layer.weights if "lora" not in w.path)

        function = tf.function(_lora_gradient_step(backbone), jit_compile=jit)
        function(inputs).numpy()
        settings[(dtype, jit)] = (function, layer_parameters, [])
    for _ in range(rounds):
        for function, _, times in settings.values():
            started = time.perf_counter()
            function(inputs).numpy()
            times.append(time.perf_counter() - started)
    results = {}
    for (dtype, jit), (_, parameters, times) in settings.items():
        seconds = float(np.median(times))
        tokens = rows * length / seconds
        reference = REFERENCE_GFLOPS["bfloat16" if "bfloat16" in dtype else "float32"]
        results[f"{dtype}{'_xla' if jit else ''}"] = {
            "seconds": seconds, "tokens_per_second": tokens,
            "share_of_idle_reference": 4 * parameters * tokens / (reference * 1e9)}
    return results


def peak_memory_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class IndexFactory:
    """Flat MiniLM indexes over passage lists, each distinct text embedded once."""

    def __init__(self, encoder):
        self.encoder, self.vectors = encoder, {}

    def __call__(self, passages):
        texts = [passage_text(p) for p in as_passages(passages)]
        missing = sorted({t for t in texts if t not in self.vectors})
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing, verbose=0)):
                self.vectors[text] = vector
        embeddings = np.stack([self.vectors[t] for t in texts]).astype("float32")
        return PassageIndex.from_embeddings(passages, embeddings, encoder=self.encoder)


def teacher_dir(mode):
    """Where a run of `mode` saves its teacher: only the full run replaces
    `TEACHER_DIR`, the committed teacher the other benches read."""
    return TEACHER_DIR if mode == "full" else f"{TEACHER_DIR}_{mode}"


def save_llm_teacher(model, directory=TEACHER_DIR):
    """Writes the teacher's LoRA weights and settings as one folder, swapped in
    whole (`write_folder`); returns its path."""
    settings = dict(TEACHER, dtype=model.rag.generator.backbone.dtype_policy.name,
                    doc_score_scale=float(model.rag.doc_score_scale.numpy()))

    def write(staging):
        model.rag.generator.backbone.save_lora_weights(os.path.join(staging, "teacher.lora.h5"))
        write_json(settings, os.path.join(staging, "teacher.json"))

    return write_folder(directory, write, kind="teacher")


def load_llm_teacher(index, encoder, directory=TEACHER_DIR, dtype="float32"):
    """The trained teacher: `load_smollm2()` + the saved LoRA weights and scale."""
    with open(os.path.join(directory, "teacher.json")) as f:
        settings = json.load(f)
    settings = {"answer_leading_space": False, **settings}  # Teachers saved before it existed.
    trained_with = ("num_docs", "lora_rank") + PREPROCESSOR_SETTINGS
    mismatched = {k: settings.get(k) for k in trained_with if settings.get(k) != TEACHER[k]}
    if mismatched:
        raise ValueError(f"The saved teacher in {directory} was trained with other settings "
                         f"than TEACHER ({ {k: TEACHER[k] for k in mismatched} }). "
                         f"Received: settings={mismatched}")
    model = build_smollm2_rag_teacher(index, encoder, dtype=dtype)
    model.rag.generator.backbone.load_lora_weights(os.path.join(directory, "teacher.lora.h5"))
    model.rag.log_doc_score_scale.assign(np.log(settings["doc_score_scale"]))
    return model


def closed_book_model(causal_lm, encoder, index_factory):
    """SmolLM2 reading the question alone: one empty passage, no context text."""
    index = index_factory([{"id": "none", "title": "", "text": ""}])
    return build_causal_lm_rag_question_answerer(
        index, encoder, smollm2_rag_preprocessor(causal_lm, "{passage}{question}"), causal_lm,
        num_docs=1, backend="tensor")


def answer_contained(questions, predictions):
    """Share of answers whose normalised text contains the normalised gold answer."""
    return float(np.mean([normalize_answer(q["answer"]) in normalize_answer(p)
                          for q, p in zip(questions, predictions)]))


def scored(model, questions, max_length=None):
    started = time.perf_counter()
    predictions = answer_questions_at(model, questions, max_length)
    seconds = time.perf_counter() - started
    scores = score_answers(questions, predictions)
    scores["answer_contained"] = answer_contained(questions, predictions)
    scores["count"] = len(questions)
    scores["seconds_per_question"] = seconds / max(len(questions), 1)
    return scores


def answer_questions_at(model, questions, max_length=None):
    if max_length is None:
        return answer_questions(model, questions, batch_size=EVAL_BATCH)
    texts = [q["question"] for q in questions]
    answers = []
    for start in range(0, len(texts), EVAL_BATCH):
        batch = texts[start : start + EVAL_BATCH]
        filler = EVAL_BATCH - len(batch)
        answers += model.generate(batch + batch[-1:] * filler, max_length=max_length,
                                  batch_size=EVAL_BATCH)[: len(batch)]
    return answers


def swapped_capitals(model, index, questions, max_length=None):
    """Share of deranged-capital answers that follow the index (not the true capital)."""
    predictions = answer_questions_at(model.with_index(index), questions, max_length)
    return {
        "questions": len(questions),
        "followed": follow_rate(questions, predictions),
        "followed_contained": answer_contained(questions, predictions),
        "kept_true_capital": follow_rate(questions, predictions, key="original_answer"),
        "examples": [{"question": q["question"], "swapped_answer": q["answer"],
                      "true_answer": q["original_answer"], "predicted": p}
                     for q, p in list(zip(questions, predictions))[:6]],
        "misses": [{"question": q["question"], "swapped_answer": q["answer"], "predicted": p}
                   for q, p in zip(questions, predictions)
                   if normalize_answer(p) != normalize_answer(q["answer"])],
    }


class StepTimes(keras.callbacks.Callback):
    """Wall time and logged loss of every training batch.

    The loss is Keras' running mean over the epoch so far, so it restarts
    from one batch's loss at every epoch boundary.
    """

    def __init__(self):
        super().__init__()
        self.times, self.losses = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.started)
        self.losses.append(float(logs["loss"]) if logs and "loss" in logs else float("nan"))


def prompt_tokens_per_row(model, questions):
    """Mean padded prompt length per (question, passage) row over batches of `questions`."""
    preprocessor, lengths = model.preprocessor, []
    size = TEACHER["batch_size"]
    for start in range(0, len(questions), size):
        x = preprocessor(tf.constant([q["question"] for q in questions[start:start + size]]))
        retrieved = model.rag.retrieve(x)
        encoded = model.rag.generator.encode_prompts(x["question_token_ids"],
                                                     retrieved["passage_token_ids"])
        lengths.append(int(encoded["prompt_token_ids"].shape[1]))
    return float(np.mean(lengths))


def train_teacher(model, questions, seconds, seed):
    """`model.fit` for `seconds` of wall time (Adam, cosine decay over the budget)."""
    dataset = model.preprocess([q["question"] for q in questions],
                               [q["answer"] for q in questions],
                               batch_size=TEACHER["batch_size"], shuffle=True, seed=seed)
    steps = StepTimes()
    started = time.monotonic()
    model.fit(dataset, epochs=100000, verbose=0,
              callbacks=[TimeLimit(seconds), TimeCosineDecay(TEACHER["learning_rate"], seconds),
                         steps])
    step_seconds = float(np.median(steps.times[1:])) if len(steps.times) > 1 else float("nan")
    return {"seconds": time.monotonic() - started, "steps": len(steps.times),
            "examples": len(steps.times) * TEACHER["batch_size"],
            "first_step_seconds": steps.times[0], "median_step_seconds": step_seconds,
            "loss_first": steps.losses[0], "loss_last": steps.losses[-1],
            "curve": [(i + 1, loss) for i, loss in enumerate(steps.losses)]}


def prefill_throughput(model, questions):
    """Forward passes over the prompts of one batch (no answer): tokens/s."""
    generator = model.rag.generator
    x = model.preprocessor(tf.constant([q["question"] for q in questions]))
    encoded = generator.encode_prompts(x["question_token_ids"],
                                       model.rag.retrieve(x)["passage_token_ids"])
    forward = tf.function(lambda e: generator.backbone(
        {"token_ids": e["prompt_token_ids"], "padding_mask": e["prompt_padding_mask"]})[:, -1])
    forward(encoded).numpy()
    started = time.perf_counter()
    repeats = 2
    for _ in range(repeats):
        forward(encoded).numpy()
    seconds = (time.perf_counter() - started) / repeats
    tokens = int(np.prod(encoded["prompt_token_ids"].shape))
    return {"rows": int(encoded["prompt_token_ids"].shape[0]), "tokens": tokens,
            "seconds": seconds, "tokens_per_second": tokens / seconds}


def generate_timing(model, questions, batch_size):
    """Median seconds of one `generate` call on `batch_size` questions (after a warm-up)."""
    texts = [q["question"] for q in questions]
    batches = [(texts * batch_size)[i : i + batch_size] for i in range(0, 2 * batch_size, batch_size)]
    model.generate(batches[0], batch_size=batch_size)
    times = []
    for batch in batches:
        started = time.perf_counter()
        answers = model.generate(batch, batch_size=batch_size)
        times.append(time.perf_counter() - started)
    return {"batch_size": batch_size, "seconds": float(np.median(times)), "answers": answers}


def decoded_steps(model, answers):
    """Decoding steps of a batch: its longest answer's tokens + `<|im_end|>`."""
    _, labels = model.preprocessor.tokenize_answers(tf.constant(answers))
    return int(np.max(np.sum(labels.numpy() != model.preprocessor.padding_id, axis=1)))


def speed(results, model, prefill, latency, train, peak, reference):
    """Tokens/s and shares of the machine's matmul figure (`peak`, measured now)
    and of the idle machine's (`reference`)."""
    per_row = results["teacher_prompt_tokens_per_row"] + TEACHER["answer_length"] - 1
    rows = TEACHER["batch_size"] * TEACHER["num_docs"]
    training_tokens = rows * per_row / train["median_step_seconds"]
    batch32 = latency["batch_32"]
    steps = decoded_steps(model, batch32["answers"])
    decode_seconds = max(batch32["seconds"] - prefill["seconds"], 1e-9)
    decode_rows = 32 * TEACHER["num_docs"] * steps
    figures = {
        "training_tokens_per_second": training_tokens,
        "training_share_of_peak": FLOPS_PER_TOKEN["training"] * training_tokens / (peak * 1e9),
        "prefill_tokens_per_second": prefill["tokens_per_second"],
        "prefill_share_of_peak": (FLOPS_PER_TOKEN["prefill"] * prefill["tokens_per_second"]
                                  / (peak * 1e9)),
        "decoded_steps_batch_32": steps,
        "decoding_tokens_per_second": 32 * steps / decode_seconds,
        "decoding_row_tokens_per_second": decode_rows / decode_seconds,
        "decoding_share_of_peak": (FLOPS_PER_TOKEN["decoding"] * decode_rows / decode_seconds
                                   / (peak * 1e9)),
        "peak_gflops_used": peak,
    }
    for kind in ("training", "prefill", "decoding"):
        figures[f"{kind}_share_of_idle_reference"] = (
            figures[f"{kind}_share_of_peak"] * peak / reference)
    figures["idle_reference_gflops"] = reference
    return {k: float(v) for k, v in figures.items()}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    names = list(results["models"])
    ems = [results["models"][n]["held_out"]["exact_match"] for n in names]
    contained = [results["models"][n]["held_out"]["answer_contained"] for n in names]
    where = np.arange(len(names))
    axes[0].bar(where - 0.2, ems, 0.4, label="exact match")
    axes[0].bar(where + 0.2, contained, 0.4, label="answer contained")
    axes[0].set_xticks(where, names, rotation=20, fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("Held-out countries")
    axes[0].legend()
    teacher = results["models"].get("llm_rag_teacher", {})
    bars = {"held-out EM": teacher.get("held_out", {}).get("exact_match", 0),
            "reworded EM": teacher.get("reworded", {}).get("exact_match", 0),
            "swapped followed": teacher.get("swapped", {}).get("followed", 0)}
    bars.update({f"type {k}": v for k, v in teacher.get("held_out", {}).get("by_type", {}).items()})
    axes[1].barh(list(bars), list(bars.values()), color="tab:green")
    axes[1].set_xlim(0, 1)
    axes[1].set_title("LoRA SmolLM2 RAG teacher")
    curve = teacher.get("training", {}).get("curve", [])
    if curve:
        axes[2].plot([p[0] for p in curve], [p[1] for p in curve])
    axes[2].set_yscale("log")
    axes[2].set_xlabel("steps")
    axes[2].set_title("Teacher training loss (Keras' running mean, reset each epoch)")
    fig.tight_layout()
    save_figure(fig, path)


def run(args):
    keras.utils.set_random_seed(args.seed)
    started = time.monotonic()
    stem = os.path.join(RESULTS, "llm_rag_bench" + ("_quick" if args.quick else ""))
    results = {"mode": args.mode, "dtype": args.dtype, "teacher": TEACHER,
               "budgets": {k: getattr(args, k) for k in FULL}, "models": {},
               "conditions": "2 CPU cores shared with other jobs (timings are upper bounds)"}
    results["matmul_gflops"] = {"float32": matmul_gflops("float32"),
                                "bfloat16": matmul_gflops("bfloat16")}
    print("matmul GFLOP/s", json.dumps({k: round(v) for k, v in results["matmul_gflops"].items()}),
          flush=True)
    if args.levers:
        results["levers"] = lever_timings()
        print("levers", json.dumps(results["levers"]), flush=True)
    models = results["models"]

    def save():
        results["peak_memory_mib"] = peak_memory_mib()
        results["total_seconds"] = time.monotonic() - started
        write_json(results, stem + ".json")

    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False
    index_factory = IndexFactory(encoder)
    train_countries, test_countries = country_split(seed=args.seed)
    passages = country_passages()
    true_train = country_questions("train", seed=args.seed, types=TRAIN_TYPES)
    test = country_questions("test", seed=args.seed)
    numeric = country_questions("test", seed=args.seed, types=NUMERIC_QUESTION_TYPES)
    reworded = country_questions("test", seed=args.seed, wording="reworded")
    train_passages, train_questions = counterfactual_augment(
        passages, true_train, train_countries, fraction=0.5, seed=args.seed)
    index = index_factory(passages)
    train_index = index_factory(train_passages)
    swapped_passages, swapped = derange_facts(
        passages, [q for q in test if q["type"] == "capital"], test_countries, seed=args.seed)
    swapped_index = index_factory(swapped_passages)
    held_out = sample_questions(test, args.eval_questions, args.seed)
    numeric = sample_questions(numeric, args.reworded_questions, args.seed)
    reworded = sample_questions(reworded, args.reworded_questions, args.seed)
    swapped = sample_questions(swapped, args.swapped_questions, args.seed)
    baseline = sample_questions(test, args.baseline_questions, args.seed + 1)
    results["questions"] = {"train": len(train_questions), "held_out": len(held_out),
                            "reworded": len(reworded), "swapped": len(swapped),
                            "numeric": len(numeric), "train_types": list(TRAIN_TYPES),
                            "baselines": len(baseline)}
    results["retrieval_recall"] = {f"at_{TEACHER['num_docs']}":
                                   retrieval_recall(index, held_out, TEACHER["num_docs"])}
    print(f"{results['questions']}  recall {results['retrieval_recall']}", flush=True)

    def record(name, entry):
        models[name] = entry
        held = entry["held_out"]
        print(f"{name:>18}: EM {held['exact_match']:.3f}  contained {held['answer_contained']:.3f}"
              f"  by type {json.dumps({k: round(v, 2) for k, v in held['by_type'].items()})}"
              + "".join(f"  {k} EM {entry[k]['exact_match']:.3f}" for k in ("reworded", "numeric")
                        if k in entry)
              + (f"  swapped followed {entry['swapped']['followed']:.3f}" if "swapped" in entry
                 else ""), flush=True)
        save()

    loaded = time.monotonic()
    causal_lm = None if args.load_teacher else load_smollm2(dtype=args.dtype, sequence_length=128)
    results["load_seconds"] = time.monotonic() - loaded

    if args.load_teacher:
        teacher = load_llm_teacher(train_index, encoder, args.load_teacher, args.dtype)
    elif args.skip_baselines:
        teacher = build_smollm2_rag_teacher(train_index, encoder, causal_lm)
    else:
        # Closed book, then zero-shot RAG (the teacher before training: LoRA B = 0).
        closed = closed_book_model(causal_lm, encoder, index_factory)
        record("closed_book_smollm2", {"held_out": scored(closed, baseline, SENTENCE_LENGTH)})
        teacher = build_smollm2_rag_teacher(train_index, encoder, causal_lm)
        zero_shot = teacher.with_index(index)
        record("zero_shot_smollm2_rag",
               {"held_out": scored(zero_shot, baseline, SENTENCE_LENGTH)})
        del closed, zero_shot

    # The LoRA teacher.
    trainable = {v.path for v in teacher.trainable_variables}
    results["teacher_trainable"] = {"variables": len(trainable),
                                    "parameters": int(sum(np.prod(v.shape) for v in
                                                          teacher.trainable_variables)),
                                    "all_lora_or_scale": all("lora" in p or "doc_score" in p
                                                             for p in trainable)}
    results["teacher_prompt_tokens_per_row"] = prompt_tokens_per_row(teacher, train_questions[:32])
    if args.load_teacher:
        training = {"loaded_from": args.load_teacher, "median_step_seconds": float("nan")}
    else:
        training = train_teacher(teacher, train_questions, args.train_seconds, args.seed)
        print(f"teacher: {training['steps']} steps in {training['seconds']:.0f} s "
              f"(first {training['first_step_seconds']:.0f} s, median "
              f"{training['median_step_seconds']:.1f} s), loss {training['loss_first']:.3f} → "
              f"{training['loss_last']:.3f}", flush=True)
        results["teacher_dir"] = save_llm_teacher(teacher, teacher_dir(args.mode))
        print(f"teacher saved to {results['teacher_dir']}", flush=True)
    answering = teacher.with_index(index)
    entry = {"training": training, "held_out": scored(answering, held_out)}
    entry["reworded"] = scored(answering, reworded)
    entry["numeric"] = scored(answering, numeric)
    entry["swapped"] = swapped_capitals(teacher, swapped_index, swapped)
    record("llm_rag_teacher", entry)
    latency = {"batch_1": generate_timing(answering, held_out[: int(args.latency_questions)], 1),
               "batch_32": generate_timing(answering, held_out, 32)}
    entry["latency"] = latency
    entry["doc_score_scale"] = float(teacher.rag.doc_score_scale.numpy())
    prefill = prefill_throughput(answering, held_out[:32])
    kind = "bfloat16" if "bfloat16" in args.dtype else "float32"
    entry["speed"] = speed(results, answering, prefill, latency, training,
                           results["matmul_gflops"][kind], REFERENCE_GFLOPS[kind])
    entry["speed"]["prefill"] = prefill
    for timing in latency.values():
        timing["answers"] = timing["answers"][:3]
    record("llm_rag_teacher", entry)
    print("speed", json.dumps({k: round(v, 3) for k, v in entry["speed"].items()
                               if not isinstance(v, dict)}), flush=True)
    del teacher, answering

    if not args.skip_peer:
        texts = [p["text"] for p in passages + train_passages + swapped_passages]
        texts += [q[k] for q in true_train + train_questions + test + reworded + swapped
                  for k in ("question", "answer")]
        preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
        peer = build_rag_question_answerer(train_index, encoder, preprocessor, PEER_GENERATOR,
                                           num_docs=PEER_DOCS)
        peer.compile(optimizer=keras.optimizers.Adam(PEER_LEARNING_RATE))
        dataset = peer.preprocess([q["question"] for q in train_questions],
                                  [q["answer"] for q in train_questions], batch_size=32,
                                  shuffle=True, seed=args.seed)
        peer_started = time.monotonic()
        peer.fit(dataset, epochs=100000, verbose=0,
                 callbacks=[TimeLimit(args.peer_seconds),
                            TimeCosineDecay(PEER_LEARNING_RATE, args.peer_seconds)])
        peer_answering = peer.with_index(index)
        record("issue4_copy_teacher", {
            "training": {"seconds": time.monotonic() - peer_started},
            "generator_parameters": int(peer.rag.generator.count_params()),
            "held_out": scored(peer_answering, held_out),
            "reworded": scored(peer_answering, reworded),
            "swapped": swapped_capitals(peer, swapped_index, swapped),
            "latency": {"batch_1": generate_timing(peer_answering, held_out[:3], 1),
                        "batch_32": generate_timing(peer_answering, held_out, 32)},
        })
        for timing in models["issue4_copy_teacher"]["latency"].values():
            timing["answers"] = timing["answers"][:3]

    teacher_entry = models["llm_rag_teacher"]
    held = teacher_entry["held_out"]
    results["targets"] = {
        "teacher_em_overall_ge_0.90": held["exact_match"] >= 0.90,
        "teacher_em_every_type_ge_0.80": min(held["by_type"].values()) >= 0.80,
        "teacher_reworded_em_ge_0.85": teacher_entry["reworded"]["exact_match"] >= 0.85,
        "swapped_followed_ge_0.95": teacher_entry["swapped"]["followed"] >= 0.95,
        "training_share_ge_0.30": teacher_entry["speed"]["training_share_of_peak"] >= 0.30,
        "prefill_share_ge_0.30": teacher_entry["speed"]["prefill_share_of_peak"] >= 0.30,
    }
    if "issue4_copy_teacher" in models:
        results["ratios"] = {
            "teacher_em_over_peer_em": held["exact_match"]
            / max(models["issue4_copy_teacher"]["held_out"]["exact_match"], 1e-9),
            "teacher_latency_b1_over_peer": teacher_entry["latency"]["batch_1"]["seconds"]
            / models["issue4_copy_teacher"]["latency"]["batch_1"]["seconds"],
        }
    save()
    plot(results, stem + ".png")
    print(json.dumps(results["targets"], indent=2))
    print(f"wrote {stem}.json and .png in {results['total_seconds']:.0f} s")
    return results


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
