"""RAG quality on held-out countries: teacher, distilled student, baselines.

Everything runs side by side in one process on the countryinfo knowledge base
(80/20 split by country; the held-out countries' passages are in the index,
their facts in no training pair):

- retrieval recall@num_docs of the gold passage (MiniLM query/passage encoder);
- RAG teacher (`minilm` generator: the pretrained MiniLM backbone, its top
  transformer layer fine-tuned and the rest frozen, reads question +
  passage, a trained copy decoder answers; 3 passages, RAG-Token; Adam with
  a cosine learning-rate decay over its time budget, `TimeCosineDecay`), EM
  overall and per question type;
- RAG students (`small` from-scratch generator, 2 passages) distilled from
  the teacher with `keras_ragkd.Distiller` on the per-token marginals (α =
  0.8, T = 1 unless `--alpha` / `--temperature` say otherwise; the teacher
  runs once over the training set into a top-k `TeacherCache`, reading the
  student's 2 passages (`with_index(..., num_docs=2)`: the same top two of its
  three), so its marginal mixes only passages the student can copy from;
  Adam with a cosine decay over its time budget) with the teacher's mistakes
  on the training answers masked out of the soft loss
  (`mask_teacher_errors=True`),
  each next to the same student from the same initial weights distilled
  without that mask (ablation) and trained without distillation, both for
  the same number of steps (the same cosine decay over those steps): one such
  group per seed (`--student-seeds`, 2 by default), the EM differences
  averaged over them;
- a closed-book generator of the teacher's size (no retrieval);
- RAG-Sequence vs RAG-Token (student size, same number of steps);
- generation latency per question (batch of 1, greedy), generator sizes.

Training uses counterfactual passages for half the training facts (see
`keras_ragkd.data.counterfactual_augment`); evaluation uses the true index.
Writes `benchmarks/results/rag_quality_bench.json` and `.png`
(`rag_quality_bench_quick.*` with `--quick`). Training budgets are wall-clock
(`TimeLimit`, tracing excluded); every budget can be overridden, e.g.
`--teacher-seconds 600`.

Run: `python benchmarks/rag_quality_bench.py --quick` (tiny budgets, a smoke
run of the whole pipeline: about 13 minutes on 2 cores, most of it indexing,
tracing and the teacher cache) or without `--quick` (95 minutes measured with
two seeds of three students: 30 minutes of teacher training).
"""

import argparse
import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.distillation import Distiller
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.rag import GENERATOR_SIZES
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag import RetrievalAugmentedGenerator
from keras_ragkd.training_budget import TimeCosineDecay
from keras_ragkd.training_budget import StepLimit
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.rag import build_generator
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.data import counterfactual_augment
from keras_ragkd.rag import PassageTokenTable
from keras_ragkd.rag.evaluation import answer_questions
from keras_ragkd.rag.evaluation import latency_per_question
from keras_ragkd.rag.evaluation import retrieval_recall
from keras_ragkd.rag.evaluation import sample_questions
from keras_ragkd.rag.evaluation import score_answers
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.models import load_minilm_tokenizer
from results_io import save_figure
from results_io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FULL = dict(teacher_seconds=1800, student_seconds=450, closed_book_seconds=450,
            eval_questions=0, latency_questions=50)
QUICK = dict(teacher_seconds=60, student_seconds=30, closed_book_seconds=20,
             eval_questions=100, latency_questions=10)
TEACHER_DOCS, STUDENT_DOCS = 3, 2
TEACHER_GENERATOR = dict(GENERATOR_SIZES["minilm"], reader_fine_tune_layers=1)
BATCH_SIZE = 32
TEACHER_LEARNING_RATE, STUDENT_LEARNING_RATE = 1e-3, 2e-3
ALPHA, TEMPERATURE, CACHE_TOP_K = 0.8, 1.0, 32
STUDENT_SEEDS = 2


def hard_loss(model):
    """Token cross-entropy on a RAG model's log-probabilities, padding ignored."""
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=model.preprocessor.padding_id
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (~13 min)")
    for name in FULL:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student-seeds", type=int, default=STUDENT_SEEDS,
                        help="pairs of distilled and plain students, one per seed")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help="weight of the hard-label loss in the distillation loss")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE,
                        help="distillation temperature (the cache's too)")
    args = parser.parse_args(argv)
    if args.student_seeds < 1:
        parser.error(f"--student-seeds must be at least 1. Received: student_seeds={args.student_seeds}")
    defaults = QUICK if args.quick else FULL
    args.mode = "quick" if args.quick else "full"
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif getattr(args, name) != value:
            args.mode = "custom"
    if (args.alpha, args.temperature, args.student_seeds) != (ALPHA, TEMPERATURE, STUDENT_SEEDS):
        args.mode = "custom"
    return args


class LossCurve(keras.callbacks.Callback):
    """Records `(seconds, steps, loss)` every few batches."""

    def __init__(self, key="loss", every=5):
        super().__init__()
        self.key, self.every, self.points, self.steps = key, every, [], 0

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0 and logs and self.key in logs:
            self.points.append((time.monotonic() - self.started, self.steps, float(logs[self.key])))


def train(model, dataset, limits, curve_key="loss"):
    curve = LossCurve(curve_key)
    started = time.monotonic()
    model.fit(dataset, epochs=100000, verbose=0, shuffle=False, callbacks=[*limits, curve])
    return {"seconds": time.monotonic() - started, "steps": curve.steps, "curve": curve.points}


def evaluate(model, questions, marginalization=None):
    return score_answers(questions, answer_questions(model, questions, marginalization))


def closed_book_model(encoder, preprocessor, directory):
    """Teacher-size generator that sees only the question (one empty passage)."""
    empty = [{"id": "none", "title": "", "text": "."}]
    index = PassageIndex.build(empty, encoder, verbose=0)
    index.save(os.path.join(directory, "closed_book_index"))
    generator = build_generator(TEACHER_GENERATOR, preprocessor)
    rag = RetrievalAugmentedGenerator(
        encoder, PassageRetriever(index, k=1), generator,
        passage_tokens=PassageTokenTable.from_index(index, preprocessor),
        num_docs=1, copy_from_question=True,
    )
    return RagQuestionAnswerer(preprocessor, rag)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    ems = [results["models"][n]["exact_match"] for n in names]
    axes[0].bar(names, ems, color="tab:blue")
    axes[0].set_title("Exact match, held-out countries")
    axes[0].set_ylim(0, 1)
    axes[0].tick_params(axis="x", rotation=45, labelsize=8)
    for label in axes[0].get_xticklabels():
        label.set_horizontalalignment("right")
    timed = [n for n in names if "latency_seconds" in results["models"][n]]
    axes[1].bar(timed, [1000 * results["models"][n]["latency_seconds"] for n in timed],
                color="tab:orange")
    axes[1].set_title("Generation latency per question (ms, batch 1)")
    axes[1].tick_params(axis="x", rotation=30)
    for name in names:
        curve = results["models"][name].get("training", {}).get("curve")
        if curve:
            axes[2].plot([p[1] for p in curve], [p[2] for p in curve], label=name)
    axes[2].set_title("Training loss (running mean) vs steps")
    axes[2].set_xlabel("steps")
    axes[2].set_yscale("log")
    axes[2].legend()
    fig.tight_layout()
    save_figure(fig, path)


def run(args, workdir):
    """Runs the benchmark, with `workdir` for indexes and the teacher cache."""
    keras.utils.set_random_seed(args.seed)
    started = time.monotonic()
    stem = os.path.join(RESULTS, "rag_quality_bench" + ("_quick" if args.quick else ""))
    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False

    train_countries, test_countries = country_split(seed=args.seed)
    passages = country_passages()
    true_train = country_questions("train", seed=args.seed)
    test = country_questions("test", seed=args.seed)
    train_passages, train_questions = counterfactual_augment(
        passages, true_train, train_countries, fraction=0.5, seed=args.seed
    )
    index = PassageIndex.build(passages, encoder, verbose=0)
    train_index = PassageIndex.build(train_passages, encoder, verbose=0)
    texts = [p["text"] for p in passages + train_passages]
    texts += [q[k] for q in true_train + train_questions + test for k in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
    evaluation = sample_questions(test, args.eval_questions, args.seed)
    timing = evaluation[: int(args.latency_questions)]
    results = {
        "mode": args.mode,
        "budgets_seconds": {k: getattr(args, k) for k in FULL},
        "teacher_generator": TEACHER_GENERATOR,
        "teacher_learning_rate": {"peak": TEACHER_LEARNING_RATE,
                                  "schedule": "cosine over the time budget"},
        "student_learning_rate": {"peak": STUDENT_LEARNING_RATE,
                                  "schedule": "cosine over the distilled student's time budget "
                                              "(its step count for the other students)"},
        "student_seeds": args.student_seeds,
        "distillation": {"alpha": args.alpha, "temperature": args.temperature, "cache_top_k": CACHE_TOP_K,
                         "cache_teacher_docs": STUDENT_DOCS, "mask_teacher_errors": True, "ablation": "rag_student_distilled_unmasked"},
        "countries": {"train": len(train_countries), "test": len(test_countries)},
        "questions": {"train": len(train_questions), "test_scored": len(evaluation)},
        "retrieval_recall": {
            f"at_{TEACHER_DOCS}": retrieval_recall(index, test, TEACHER_DOCS),
            f"at_{STUDENT_DOCS}": retrieval_recall(index, test, STUDENT_DOCS),
        },
        "models": {},
    }
    models = results["models"]
    print(f"recall@{TEACHER_DOCS} {results['retrieval_recall'][f'at_{TEACHER_DOCS}']:.3f}  "
          f"recall@{STUDENT_DOCS} {results['retrieval_recall'][f'at_{STUDENT_DOCS}']:.3f}", flush=True)

    def dataset(model, questions, seed=None):
        return model.preprocess([q["question"] for q in questions], [q["answer"] for q in questions],
                                batch_size=BATCH_SIZE, shuffle=seed is not None, seed=seed)

    def record(name, model, training, marginalization=None, timed=True):
        entry = evaluate(model, evaluation, marginalization)
        entry["generator_parameters"] = int(model.rag.generator.count_params())
        entry["num_docs"] = model.rag.num_docs
        entry["doc_score_scale"] = float(model.rag.doc_score_scale.numpy())
        entry["training"] = training
        if timed:
            entry["latency_seconds"] = latency_per_question(model, timing, marginalization)
        models[name] = entry
        print(f"{name:>22}: EM {entry['exact_match']:.3f}  F1 {entry['token_f1']:.3f}  "
              f"params {entry['generator_parameters']:,}  steps {training['steps']}  "
              f"{'latency %.1f ms' % (1000 * entry['latency_seconds']) if timed else ''}  "
              f"by type {json.dumps({k: round(v, 2) for k, v in entry['by_type'].items()})}", flush=True)
        write_json(results, stem + ".json")

    # Teacher.
    teacher = build_rag_question_answerer(train_index, encoder, preprocessor, TEACHER_GENERATOR,
                                          num_docs=TEACHER_DOCS)
    teacher.compile(optimizer=keras.optimizers.Adam(TEACHER_LEARNING_RATE))
    # Adam with its learning rate annealed along a cosine over the time budget.
    teacher_budget = [TimeLimit(args.teacher_seconds),
                      TimeCosineDecay(TEACHER_LEARNING_RATE, args.teacher_seconds)]
    teacher_training = train(teacher, dataset(teacher, train_questions, 1), teacher_budget)
    record("rag_teacher", teacher.with_index(index), teacher_training)

    def student_optimizer(steps):
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            STUDENT_LEARNING_RATE, decay_steps=steps))

    # The teacher runs once over the (fixed-order) training set into a cache,
    # so the distiller never runs it. It reads the student's passages (its own
    # top STUDENT_DOCS): a marginal over a third passage would put mass on
    # words the student cannot copy.
    fixed_order = dataset(teacher, train_questions)
    cache_started = time.monotonic()
    cache_teacher = teacher.with_index(train_index, num_docs=STUDENT_DOCS)
    cache = TeacherCache.build(cache_teacher, fixed_order, os.path.join(workdir, "teacher_cache"),
                               top_k=CACHE_TOP_K, temperature=args.temperature, verbose=0)
    cache_seconds = time.monotonic() - cache_started
    print(f"teacher cache: {cache.count} answers in {cache_seconds:.0f} s", flush=True)

    # Students in groups, one group per seed, all from the same initial
    # weights and for the same number of steps: one distilled from the
    # teacher's cache on the per-token marginals with the teacher's mistakes
    # masked out of the soft loss (`mask_teacher_errors`), the same without
    # the mask (ablation), and one trained on the answers alone. Examples are
    # reshuffled into new batches each epoch (the cached ones after the cache
    # is attached); Adam with a cosine decay over the distilled student's time
    # budget, and over its step count for the others.
    def distiller_for(student, mask_teacher_errors, optimizer):
        distiller = Distiller(None, student, alpha=args.alpha, temperature=args.temperature,
                              mask_teacher_errors=mask_teacher_errors)
        distiller.compile(optimizer=optimizer, loss=hard_loss(student))
        return distiller

    def cached_dataset(seed):
        cached = cache.attach(fixed_order).unbatch().shuffle(
            len(train_questions), seed=seed, reshuffle_each_iteration=True).batch(BATCH_SIZE)
        return cached.apply(tf.data.experimental.assert_cardinality(len(fixed_order)))

    def student_from(initial_weights, marginalization="token"):
        student = build_rag_question_answerer(
            train_index, encoder, preprocessor, "small", num_docs=STUDENT_DOCS,
            marginalization=marginalization)
        student.rag.generator.set_weights(initial_weights)
        return student

    pairs = []
    for offset in range(args.student_seeds):
        seed = args.seed + 1 + offset
        keras.utils.set_random_seed(seed)
        student = build_rag_question_answerer(train_index, encoder, preprocessor, "small",
                                              num_docs=STUDENT_DOCS)
        initial_weights = student.rag.generator.get_weights()
        distiller = distiller_for(student, True, keras.optimizers.Adam(STUDENT_LEARNING_RATE))
        student_budget = [TimeLimit(args.student_seconds),
                          TimeCosineDecay(STUDENT_LEARNING_RATE, args.student_seconds)]
        suffix = "" if offset == 0 else f"_seed{seed}"
        distilled_training = train(distiller, cached_dataset(seed), student_budget,
                                   curve_key="student_loss")
        distilled_training["teacher_cache_seconds"] = cache_seconds
        steps = distilled_training["steps"]
        record("rag_student_distilled" + suffix, student.with_index(index), distilled_training,
               timed=offset == 0)

        unmasked = student_from(initial_weights)
        unmasked_training = train(distiller_for(unmasked, False, student_optimizer(steps)),
                                  cached_dataset(seed), [StepLimit(steps)], curve_key="student_loss")
        record("rag_student_distilled_unmasked" + suffix, unmasked.with_index(index),
               unmasked_training, timed=False)

        plain = student_from(initial_weights)
        plain.compile(optimizer=student_optimizer(steps), loss=hard_loss(plain))
        plain_training = train(plain, dataset(plain, train_questions, seed), [StepLimit(steps)])
        record("rag_student_plain" + suffix, plain.with_index(index), plain_training,
               timed=offset == 0)
        pairs.append({"seed": seed, "steps": steps,
                      "distilled": models["rag_student_distilled" + suffix]["exact_match"],
                      "distilled_unmasked": models["rag_student_distilled_unmasked" + suffix]["exact_match"],
                      "plain": models["rag_student_plain" + suffix]["exact_match"]})
        if offset == 0:
            first_initial_weights, first_steps = initial_weights, steps
    results["student_pairs"] = pairs

    # RAG-Sequence at the student's size, same steps.
    keras.utils.set_random_seed(args.seed + 1)
    sequence = student_from(first_initial_weights, marginalization="sequence")
    sequence.compile(optimizer=student_optimizer(first_steps))
    sequence_training = train(sequence, dataset(sequence, train_questions, args.seed + 1),
                              [StepLimit(first_steps)])
    record("rag_sequence_student", sequence.with_index(index), sequence_training)

    # Closed book, teacher size, trained on the true training facts.
    closed = closed_book_model(encoder, preprocessor, workdir)
    closed.compile(optimizer=keras.optimizers.Adam(1e-3))
    closed_training = train(closed, dataset(closed, true_train, 3),
                            [TimeLimit(args.closed_book_seconds)])
    record("closed_book", closed, closed_training, timed=False)

    teacher_em = models["rag_teacher"]["exact_match"]
    distilled_em = float(np.mean([pair["distilled"] for pair in pairs]))
    mean_difference = float(np.mean([pair["distilled"] - pair["plain"] for pair in pairs]))
    unmasked_difference = float(np.mean([pair["distilled_unmasked"] - pair["plain"] for pair in pairs]))
    results["ratios"] = {
        "student_em_over_teacher_em": distilled_em / max(teacher_em, 1e-9),
        "student_params_over_teacher_params": models["rag_student_distilled"]["generator_parameters"]
        / models["rag_teacher"]["generator_parameters"],
        "student_latency_over_teacher_latency": models["rag_student_distilled"]["latency_seconds"]
        / models["rag_teacher"]["latency_seconds"],
        "distilled_em_minus_plain_em": mean_difference,
        "unmasked_distilled_em_minus_plain_em": unmasked_difference,
        "sequence_em_minus_token_em": models["rag_sequence_student"]["exact_match"]
        - models["rag_student_plain"]["exact_match"],
    }
    results["student_pairs_mean"] = {
        "distilled": distilled_em,
        "distilled_unmasked": float(np.mean([pair["distilled_unmasked"] for pair in pairs])),
        "plain": float(np.mean([pair["plain"] for pair in pairs])),
        "distilled_minus_plain": mean_difference,
    }
    results["total_seconds"] = time.monotonic() - started
    print(json.dumps({k: round(v, 3) for k, v in results["ratios"].items()}, indent=2))
    write_json(results, stem + ".json")
    plot(results, stem + ".png")
    print(f"wrote {stem}.json and .png in {results['total_seconds']:.0f} s")
    return results


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rag_bench_") as workdir:
        return run(args, workdir)


if __name__ == "__main__":
    main()
