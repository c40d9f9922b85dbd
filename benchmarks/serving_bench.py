"""Served latency: the exported SavedModel vs in-process `generate`.

A small RAG model (MiniLM retrieval over the countryinfo knowledge base, a
`small` copy generator trained for `--seconds`) answers held-out questions
two ways, side by side in one process: `RagQuestionAnswerer.generate`
(one compiled function, FAISS retrieval through `tf.py_function`) and the
exported SavedModel's `serve` signature (`tf.saved_model.load`, retrieval in
the graph). Reports latency per question at batch 1 and 32 (median of
`--repeats` timed passes after a warm-up), the served/in-process ratio
(target ≤ 1.2×), the export's size on disk and whether the answers are
identical. Writes `benchmarks/results/serving_bench.json` and `.png`.

Run: `python benchmarks/serving_bench.py` (about 4 minutes on 2 cores) or
`--quick`.
"""

import argparse
import os
import statistics
import tempfile
import time

import keras
import tensorflow as tf
import tensorflow_text  # noqa: F401 (the WordPiece ops of the reloaded graph)

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.training_budget import TimeLimit
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.models import load_minilm_tokenizer
from results_io import save_figure
from results_io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BATCH_SIZES = (1, 32)
TARGET_RATIO = 1.2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="training budget")
    parser.add_argument("--questions", type=int, default=64, help="held-out questions timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median kept)")
    parser.add_argument("--quick", action="store_true", help="20 s of training, 32 questions")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.questions, args.repeats = 20.0, 32, 2
    return args


def train_model(seconds):
    encoder = load_minilm_encoder(sequence_length=32)
    passages = country_passages()
    train, test = country_questions("train"), country_questions("test")
    index = PassageIndex.build(passages, encoder, verbose=0)
    texts = [p["text"] for p in passages] + [q[k] for q in train + test for k in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
    model = build_rag_question_answerer(index, encoder, preprocessor, generator="small", num_docs=2)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit([q["question"] for q in train], [q["answer"] for q in train], batch_size=32,
              epochs=1000, verbose=0, callbacks=[TimeLimit(seconds)])
    return model, index, [q["question"] for q in test]


def seconds_per_question(answer, questions, batch_size, repeats):
    """Median over passes of the time per question, after one warm-up pass."""
    batches = [questions[i : i + batch_size] for i in range(0, len(questions), batch_size)]
    answer(batches[0])
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            answer(batch)
        passes.append((time.perf_counter() - started) / len(questions))
    return statistics.median(passes)


def folder_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path) for name in names
    )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for offset, (key, label) in enumerate((("in_process", "in-process generate"),
                                            ("saved_model", "SavedModel serve"))):
        values = [results["latency_ms"][key][str(b)] for b in BATCH_SIZES]
        axis.bar([i + offset * width for i in range(len(BATCH_SIZES))], values, width,
                 label=label)
    axis.set_xticks([i + width / 2 for i in range(len(BATCH_SIZES))],
                    [f"batch {b}" for b in BATCH_SIZES])
    axis.set_ylabel("ms per question")
    axis.set_title("RAG answering latency (2 cores)")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    model, index, questions = train_model(args.seconds)
    questions = questions[: args.questions]
    with tempfile.TemporaryDirectory() as workdir:
        export_path = os.path.join(workdir, "saved_model")
        started = time.perf_counter()
        model.export(export_path)
        export_seconds = time.perf_counter() - started
        served = tf.saved_model.load(export_path)

        def serve(batch):
            return [a.decode() for a in served.serve(tf.constant(batch))["answers"].numpy()]

        identical = serve(questions) == model.generate(questions)
        latency = {"in_process": {}, "saved_model": {}}
        for batch_size in BATCH_SIZES:
            for key, answer in (("in_process", model.generate), ("saved_model", serve)):
                latency[key][str(batch_size)] = 1000 * seconds_per_question(
                    answer, questions, batch_size, args.repeats
                )
        size = folder_bytes(export_path)
    ratios = {str(b): latency["saved_model"][str(b)] / latency["in_process"][str(b)]
              for b in BATCH_SIZES}
    results = {
        "mode": "quick" if args.quick else "full",
        "questions": len(questions),
        "training_seconds": args.seconds,
        "latency_ms": latency,
        "served_over_in_process": ratios,
        "target_ratio": TARGET_RATIO,
        "answers_identical": identical,
        "export_bytes": size,
        "export_seconds": export_seconds,
        "index": {"passages": len(index), "factory": index.index_factory},
    }
    for b in BATCH_SIZES:
        verdict = "met" if ratios[str(b)] <= TARGET_RATIO else "MISSED"
        print(f"batch {b:>2}: in-process {latency['in_process'][str(b)]:.1f} ms/question, "
              f"SavedModel {latency['saved_model'][str(b)]:.1f} ms/question, "
              f"ratio {ratios[str(b)]:.2f}x (target <= {TARGET_RATIO}x: {verdict})")
    print(f"answers identical: {identical}; export {size / 2**20:.1f} MiB in {export_seconds:.1f} s")
    name = "serving_bench_quick" if args.quick else "serving_bench"
    write_json(results, os.path.join(RESULTS, f"{name}.json"))
    plot(results, os.path.join(RESULTS, f"{name}.png"))
    return results


if __name__ == "__main__":
    main()
