"""Another knowledge base, hot-swapped in: chemical elements into country-trained RAG models.

Models trained (or not trained) only on the countryinfo knowledge base are
pointed, with `model.with_index(index)` and no retraining, at a MiniLM index
of the `periodictable` element passages (`keras_ragkd.data.element_passages`:
another style and vocabulary — symbols, atomic numbers, masses, densities,
periods) and asked `element_questions()` (training and reworded wordings,
all seven question types), side by side in one run:

- the issue-4 small copy-generator RAG model (`rag_quality_bench`'s MiniLM
  reader + copy decoder, `--peer-seconds` of `model.fit` on the training
  countries with counterfactual passages). Its output vocabulary is built
  from the country texts, so element words come out as `[UNK]`: reported
  are EM, the share of gold answers it can express at all (no `[UNK]` in
  their tokens) and the share of its answers holding an `[UNK]`;
- zero-shot SmolLM2-135M RAG (`build_smollm2_rag_teacher` before training, LoRA
  B = 0; it answers in sentences, so "answer contained" is its figure);
- the LoRA-fine-tuned SmolLM2 RAG teacher trained on the countries
  (`llm_rag_bench`'s `teacher.lora.h5`; first found of `--teacher-dir`,
  `/tmp/ragkd_llm_teacher/`, `benchmarks/results/llm_rag_teacher/`), also on
  a few held-out country questions for reference [target: EM ≥ 0.8 on the
  element questions];
- the same teacher retrieving with hybrid retrieval (`with_index(...,
  lexical_weight=HYBRID_WEIGHT)`: TF-IDF scores of the element passages
  fused with MiniLM's; nothing retrained), since MiniLM alone confuses
  passages that differ in a number ("element number 6" vs "99"); its
  gold-passage recall is reported beside the dense one.

Writes `benchmarks/results/elements_hot_swap_bench.json` and `.png`
(`..._quick.*` with `--quick`: 40 element questions, 16 reworded, 16 for
zero-shot, 60 s of peer training; the full run: 240, 120, 64 and 600 s;
`..._custom.*` when other settings or `--skip-*` are given).
Run: `python benchmarks/elements_hot_swap_bench.py --quick`.
"""

import argparse
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.rag.smollm2_recipe import TEACHER
from keras_ragkd.rag.smollm2_recipe import build_smollm2_rag_teacher
from keras_ragkd.data import counterfactual_augment
from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.data import element_passages
from keras_ragkd.data import element_questions
from keras_ragkd.models import load_smollm2
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.training_budget import TimeCosineDecay
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.rag.evaluation import retrieval_recall
from keras_ragkd.rag.evaluation import sample_questions
from keras_ragkd.rag.evaluation import score_answers
from keras_ragkd.rag.preprocessor import UNKNOWN_ID
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.models import load_minilm_tokenizer
from llm_rag_bench import SENTENCE_LENGTH
from llm_rag_bench import TEACHER_DIR
from llm_rag_bench import IndexFactory
from llm_rag_bench import answer_contained
from llm_rag_bench import peak_memory_mib
from rag_quality_bench import TEACHER_DOCS as PEER_DOCS
from rag_quality_bench import TEACHER_GENERATOR as PEER_GENERATOR
from rag_quality_bench import TEACHER_LEARNING_RATE as PEER_LEARNING_RATE
from results_io import save_figure
from results_io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TEACHER_DIRS = ("/tmp/ragkd_llm_teacher", TEACHER_DIR)
FULL = dict(questions=240, reworded_questions=120, zero_shot_questions=64, country_questions=64,
            peer_seconds=600)
QUICK = dict(questions=40, reworded_questions=16, zero_shot_questions=16, country_questions=16,
             peer_seconds=60)
EVAL_BATCH = 32
NUM_EXAMPLES = 8
# The weight of the TF-IDF score in the hybrid teacher's retrieval (the best
# recall@2 on the element questions of 0.25 / 0.5 / 1.0, measured with
# MiniLM: 0.925 / 0.968 / 0.965, dense alone 0.836).
HYBRID_WEIGHT = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (~10-25 min)")
    for name in FULL:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None,
                            help="0 = every question" if "questions" in name else None)
    parser.add_argument("--teacher-dir", default=None,
                        help="directory of teacher.lora.h5 + teacher.json (default: first of "
                             f"{TEACHER_DIRS} that exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-llm", action="store_true", help="no SmolLM2 model")
    parser.add_argument("--skip-zero-shot", action="store_true", help="no zero-shot SmolLM2")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    args.mode = "quick" if args.quick else "full"
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif getattr(args, name) != value:
            args.mode = "custom"
        setattr(args, name, int(getattr(args, name)))
    if args.skip_peer or args.skip_llm or args.skip_zero_shot or args.teacher_dir:
        args.mode = "custom"
    return args


def find_teacher_dir(requested):
    candidates = (requested,) if requested else TEACHER_DIRS
    for directory in candidates:
        if os.path.exists(os.path.join(directory, "teacher.lora.h5")):
            return directory
    return None


def generate_answers(model, questions, max_length=None):
    """`model.generate` in batches of up to `EVAL_BATCH` (no padding up to it)."""
    texts = [q["question"] for q in questions]
    answers = []
    for start in range(0, len(texts), EVAL_BATCH):
        batch = texts[start : start + EVAL_BATCH]
        answers += list(model.generate(batch, max_length=max_length, batch_size=len(batch)))
    return [str(a) for a in answers]


def scored(model, questions, max_length=None, extra=None):
    """EM, token F1, by type, "answer contained", examples and seconds per question."""
    started = time.perf_counter()
    predictions = generate_answers(model, questions, max_length)
    seconds = time.perf_counter() - started
    scores = score_answers(questions, predictions, num_examples=NUM_EXAMPLES)
    scores["answer_contained"] = answer_contained(questions, predictions)
    scores["count"] = len(questions)
    scores["seconds"] = seconds
    scores["seconds_per_question"] = seconds / max(len(questions), 1)
    if extra:
        scores.update(extra(questions, predictions))
    return scores


def unknown_token_figures(preprocessor):
    """What a fixed output vocabulary does to unseen words: gold answers it
    can express (no `[UNK]` among their tokens) and answers holding `[UNK]`."""

    def figures(questions, predictions):
        _, labels = preprocessor.tokenize_answers(tf.constant([q["answer"] for q in questions]))
        expressible = np.all(labels.numpy() != UNKNOWN_ID, axis=1)
        return {"gold_expressible": float(np.mean(expressible)),
                "answers_with_unk": float(np.mean(["[UNK]" in p for p in predictions]))}

    return figures


def print_entry(name, knowledge_base, entry):
    print(f"{name:>22} on {knowledge_base:>16}: EM {entry['exact_match']:.3f}  contained "
          f"{entry['answer_contained']:.3f}  ({entry['count']} q, "
          f"{entry['seconds_per_question']:.2f} s/q)  by type "
          f"{json.dumps({k: round(v, 2) for k, v in entry['by_type'].items()})}", flush=True)
    for example in entry["examples"][:3]:
        print(f"{'':>26}{example}", flush=True)


def train_peer(train_index, encoder, preprocessor, train_questions, seconds, seed):
    peer = build_rag_question_answerer(train_index, encoder, preprocessor, PEER_GENERATOR,
                                       num_docs=PEER_DOCS)
    peer.compile(optimizer=keras.optimizers.Adam(PEER_LEARNING_RATE))
    dataset = peer.preprocess([q["question"] for q in train_questions],
                              [q["answer"] for q in train_questions], batch_size=32,
                              shuffle=True, seed=seed)
    started = time.monotonic()
    history = peer.fit(dataset, epochs=100000, verbose=0,
                       callbacks=[TimeLimit(seconds), TimeCosineDecay(PEER_LEARNING_RATE, seconds)])
    return peer, {"seconds": time.monotonic() - started, "epochs": len(history.epoch),
                  "loss_last": float(history.history["loss"][-1])}


def model_recall(model, questions):
    """Share of questions whose gold passage is among the model's retrieved ones."""
    found = []
    for start in range(0, len(questions), EVAL_BATCH):
        batch = questions[start : start + EVAL_BATCH]
        retrieved = model.retrieve([q["question"] for q in batch])
        found += [q["passage_id"] in {p["id"] for p in docs} for q, docs in zip(batch, retrieved)]
    return float(np.mean(found))


def load_teacher_weights(model, directory):
    """The LoRA weights and passage-posterior scale of `llm_rag_bench`'s teacher."""
    with open(os.path.join(directory, "teacher.json")) as f:
        settings = json.load(f)
    model.rag.generator.backbone.load_lora_weights(os.path.join(directory, "teacher.lora.h5"))
    model.rag.log_doc_score_scale.assign(np.log(settings["doc_score_scale"]))
    return settings


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, kb, entry) for name, model in results["models"].items()
            for kb, entry in model.items() if isinstance(entry, dict) and "exact_match" in entry]
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    labels = [f"{name}\n{kb}" for name, kb, _ in rows]
    where = np.arange(len(rows))
    axes[0].bar(where - 0.2, [e["exact_match"] for _, _, e in rows], 0.4, label="exact match")
    axes[0].bar(where + 0.2, [e["answer_contained"] for _, _, e in rows], 0.4,
                label="answer contained")
    axes[0].axhline(0.8, color="grey", linestyle="--", linewidth=1, label="target EM 0.8")
    axes[0].set_xticks(where, labels, rotation=25, fontsize=7)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("Country-trained RAG models on another knowledge base (no retraining)")
    axes[0].legend(fontsize=8)
    by_type = {name: model["elements"]["by_type"] for name, model in results["models"].items()
               if "elements" in model}
    types = sorted({t for scores in by_type.values() for t in scores})
    width = 0.8 / max(len(by_type), 1)
    for i, (name, scores) in enumerate(by_type.items()):
        axes[1].barh(np.arange(len(types)) + i * width, [scores.get(t, 0) for t in types],
                     width, label=name)
    axes[1].set_yticks(np.arange(len(types)) + 0.4 - width / 2, types, fontsize=8)
    axes[1].set_xlim(0, 1)
    axes[1].set_title("Element questions: exact match by type")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run(args):
    keras.utils.set_random_seed(args.seed)
    started = time.monotonic()
    suffix = {"quick": "_quick", "full": "", "custom": "_custom"}[args.mode]
    stem = os.path.join(RESULTS, "elements_hot_swap_bench" + suffix)
    results = {"mode": args.mode, "budgets": {k: getattr(args, k) for k in FULL},
               "conditions": "2 CPU cores shared with other jobs (timings are upper bounds)",
               "models": {}}
    models = results["models"]

    def save():
        results["peak_memory_mib"] = peak_memory_mib()
        results["total_seconds"] = time.monotonic() - started
        write_json(results, stem + ".json")

    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False
    index_factory = IndexFactory(encoder)
    train_countries, _ = country_split(seed=args.seed)
    passages = country_passages()
    true_train = country_questions("train", seed=args.seed)
    train_passages, train_questions = counterfactual_augment(
        passages, true_train, train_countries, fraction=0.5, seed=args.seed)
    countries_test = sample_questions(country_questions("test", seed=args.seed),
                                      args.country_questions, args.seed)
    passages_of_elements = element_passages()
    elements = sample_questions(element_questions(), args.questions, args.seed)
    reworded = sample_questions(element_questions(wording="reworded"), args.reworded_questions,
                                args.seed + 1)
    zero_shot_questions = sample_questions(elements, args.zero_shot_questions, args.seed)
    index_started = time.monotonic()
    element_index = index_factory(passages_of_elements)
    results["element_index"] = {"passages": len(passages_of_elements),
                                "build_seconds": time.monotonic() - index_started}
    country_index, train_index = index_factory(passages), index_factory(train_passages)
    results["questions"] = {"elements": len(elements), "elements_reworded": len(reworded),
                            "zero_shot": len(zero_shot_questions),
                            "countries_held_out": len(countries_test)}
    results["retrieval_recall"] = {f"elements_at_{k}": retrieval_recall(element_index, elements, k)
                                   for k in sorted({TEACHER["num_docs"], PEER_DOCS})}
    print(f"{results['questions']}  recall {results['retrieval_recall']}", flush=True)

    def record(name, knowledge_base, entry):
        models.setdefault(name, {})[knowledge_base] = entry
        print_entry(name, knowledge_base, entry)
        save()

    if not args.skip_peer:
        # The output vocabulary comes from the country texts only: the elements are unseen.
        texts = [p["text"] for p in passages + train_passages]
        texts += [q[k] for q in true_train + train_questions for k in ("question", "answer")]
        preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
        peer, training = train_peer(train_index, encoder, preprocessor, train_questions,
                                    args.peer_seconds, args.seed)
        models["issue4_copy_generator"] = {
            "training": training, "generator_parameters": int(peer.rag.generator.count_params()),
            "output_vocabulary_size": int(preprocessor.vocabulary_size)}
        figures = unknown_token_figures(preprocessor)
        record("issue4_copy_generator", "countries", scored(peer.with_index(country_index),
                                                            countries_test, extra=figures))
        swapped = peer.with_index(element_index)
        record("issue4_copy_generator", "elements", scored(swapped, elements, extra=figures))
        if reworded:
            record("issue4_copy_generator", "elements_reworded",
                   scored(swapped, reworded, extra=figures))
        del peer, swapped

    if not args.skip_llm:
        loaded = time.monotonic()
        causal_lm = load_smollm2(sequence_length=128)
        results["smollm2_load_seconds"] = time.monotonic() - loaded
        # Before its LoRA weights are loaded the teacher is zero-shot SmolLM2 (LoRA B = 0).
        model = build_smollm2_rag_teacher(element_index, encoder, causal_lm)
        if not args.skip_zero_shot:
            record("zero_shot_smollm2_rag", "elements",
                   scored(model, zero_shot_questions, max_length=SENTENCE_LENGTH))
        directory = find_teacher_dir(args.teacher_dir)
        results["teacher_dir"] = directory
        if directory is None:
            print(f"no LoRA teacher found in {args.teacher_dir or TEACHER_DIRS}", flush=True)
        else:
            results["teacher_settings"] = load_teacher_weights(model, directory)
            if countries_test:
                record("llm_rag_teacher", "countries",
                       scored(model.with_index(country_index), countries_test))
            record("llm_rag_teacher", "elements", scored(model, elements))
            if reworded:
                record("llm_rag_teacher", "elements_reworded", scored(model, reworded))
            hybrid = model.with_index(element_index, lexical_weight=HYBRID_WEIGHT)
            results["retrieval_recall"][f"elements_at_{TEACHER['num_docs']}_hybrid"] = (
                model_recall(hybrid, elements))
            record("llm_rag_teacher_hybrid", "elements", scored(hybrid, elements))
            if reworded:
                record("llm_rag_teacher_hybrid", "elements_reworded", scored(hybrid, reworded))
            teacher = models["llm_rag_teacher"]["elements"]
            results["targets"] = {
                "teacher_elements_em_ge_0.8": teacher["exact_match"] >= 0.8,
                "hybrid_teacher_elements_em_ge_0.8":
                    models["llm_rag_teacher_hybrid"]["elements"]["exact_match"] >= 0.8,
            }
            if "issue4_copy_generator" in models:
                peer = models["issue4_copy_generator"]["elements"]
                results["ratios"] = {
                    "teacher_em_minus_copy_generator_em": teacher["exact_match"] - peer["exact_match"],
                    "teacher_em_over_copy_generator_em": (
                        teacher["exact_match"] / peer["exact_match"] if peer["exact_match"] else None),
                }

    save()
    plot(results, stem + ".png")
    print(json.dumps({k: results.get(k) for k in ("targets", "ratios")}, indent=2))
    print(f"wrote {stem}.json and .png in {results['total_seconds']:.0f} s")
    return results


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
