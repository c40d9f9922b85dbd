"""Benchmark: 1 vs 2 workers, and retrieval in the input pipeline vs in the model.

Training steps per second under `tf.distribute.MultiWorkerMirroredStrategy`
with worker processes on localhost (`TF_CONFIG` on loopback ports picked
free), a cluster of 1 worker and then of 2, at the same **global** batch:

- `distiller`: a `Distiller` (dense teacher and student, Adam);
- `rag_faiss`: a `RagQuestionAnswerer` over the whole countryinfo knowledge
  base (978 passages), FAISS searched in the step (`tf.py_function`), each
  worker with its own replica of the saved index;
- `rag_pipeline`: the same model with no retriever, fed by
  `with_retrieved_passages` (FAISS in `tf.data`, the scores recomputed in
  the graph);
- `rag_pipeline_xla`: `rag_pipeline` compiled with `jit_compile=True` (what
  in-pipeline retrieval makes possible; the `faiss` step cannot be compiled).

The ratios printed are measured side by side in one run: the 2-worker cluster
runs right after the 1-worker one, and the RAG variants run one after another
in the same worker processes. The machine this was written on has 2 CPU
cores, shared with other jobs: 2 workers there split 2 cores (no extra
hardware; a gain means one process had not used both cores), and every figure
moves with the machine's load, often by more than the differences measured.

Writes `benchmarks/results/distributed_bench.json` and `distributed_bench.png`
(`_quick` suffix with `--quick`).

Usage:

    python benchmarks/distributed_bench.py            # ~25 min on 2 loaded cores
    python benchmarks/distributed_bench.py --quick    # ~15 min
"""

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = pathlib.Path(__file__).resolve().parent.parent
DISTILLER_BATCH = 256
RAG_BATCH = 16
NUM_DOCS = 3
WARMUP_STEPS = 3
PROCESS_TIMEOUT = 1200
RUNS = ("distiller", "rag_faiss", "rag_pipeline", "rag_pipeline_xla")


# --------------------------------------------------------------------------
# Shared by the parent (which saves the index) and the workers.
# --------------------------------------------------------------------------


def rag_parts():
    """The knowledge base, its preprocessor and passage tokens, the question pairs."""
    from keras_ragkd.data.countries import country_passages
    from keras_ragkd.data.countries import country_questions
    from keras_ragkd.rag import RagPreprocessor
    from keras_ragkd.models import load_minilm_tokenizer

    passages = country_passages()
    questions = country_questions("all")
    texts = [p["text"] for p in passages]
    texts += [q[key] for q in questions for key in ("question", "answer")]
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), texts, question_length=16, passage_length=24,
        answer_length=6, query_as_text=False,
    )
    passage_ids = preprocessor.tokenize_passages(texts[: len(passages)])
    pairs = ([q["question"] for q in questions], [q["answer"] for q in questions])
    return passages, preprocessor, passage_ids, pairs


def query_encoder(vocabulary_size):
    """A seeded, frozen query encoder (the same in every process)."""
    import keras

    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocabulary_size, 32, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])
    encoder.trainable = False  # The index was embedded by it.
    return encoder


def save_index(index_dir):
    from keras_ragkd.retrieval import PassageIndex

    passages, preprocessor, passage_ids, _ = rag_parts()
    encoder = query_encoder(preprocessor.vocabulary_size)
    PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids))).save(index_dir)


# --------------------------------------------------------------------------
# The worker program: `python distributed_bench.py --worker OUT INDEX STEPS`.
# --------------------------------------------------------------------------


def worker_main(out_path, index_dir, steps):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # Reads TF_CONFIG.
    import keras

    from keras_ragkd import Distiller
    from keras_ragkd.rag import CopyTransformerGenerator
    from keras_ragkd.rag import RagQuestionAnswerer
    from keras_ragkd.rag import RetrievalAugmentedGenerator
    from keras_ragkd.rag.input_pipeline_retrieval import with_retrieved_passages
    from keras_ragkd.retrieval import PassageIndex
    from keras_ragkd.retrieval import PassageRetriever

    results = {"replicas": strategy.num_replicas_in_sync}

    def sharded(dataset):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return dataset.repeat().with_options(options)

    def steps_per_second(model, dataset):
        model.fit(dataset, epochs=1, steps_per_epoch=WARMUP_STEPS, verbose=0)  # Traces.
        started = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return steps / (time.perf_counter() - started)

    def record(name, run):
        try:
            results[name] = {"steps_per_second": run()}
        except Exception as error:  # Reported in the JSON, then by the parent.
            message = str(error)  # TensorFlow's cause is at the end of its message.
            results[name] = {"error": f"{type(error).__name__}: {message[:300]} … "
                                      f"{message[-700:]}"}
        # After each run: a crash in a later one (see `run_cluster`) keeps these.
        with open(out_path, "w") as file:
            json.dump(results, file)

    # The Distiller.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(DISTILLER_BATCH * 8, 64)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")

    def dense(widths, seed):
        keras.utils.set_random_seed(seed)
        layers = [keras.layers.Dense(w, activation="relu") for w in widths]
        return keras.Sequential([keras.Input((64,)), *layers, keras.layers.Dense(10)])

    def run_distiller():
        with strategy.scope():
            distiller = Distiller(dense([512, 512], 1), dense([64], 2), alpha=0.3,
                                  temperature=2.0)
            distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(DISTILLER_BATCH)
        return steps_per_second(distiller, sharded(data))

    record("distiller", run_distiller)

    # The RAG variants.
    _, preprocessor, passage_ids, pairs = rag_parts()
    index = PassageIndex.load(index_dir)  # This worker's replica.

    def rag_model(in_pipeline):
        encoder = query_encoder(preprocessor.vocabulary_size)
        retriever = None if in_pipeline else PassageRetriever(index, k=NUM_DOCS)
        keras.utils.set_random_seed(1)
        generator = CopyTransformerGenerator(
            preprocessor.vocabulary_size, hidden_dim=32, num_encoder_layers=1,
            num_decoder_layers=1, num_heads=2, intermediate_dim=64,
            max_sequence_length=40, dropout=0.0,
        )
        rag = RetrievalAugmentedGenerator(
            encoder, retriever, generator, None if in_pipeline else passage_ids,
            num_docs=NUM_DOCS,
        )
        return RagQuestionAnswerer(preprocessor, rag)

    def run_rag(in_pipeline, jit_compile=False):
        def run():
            with strategy.scope():
                model = rag_model(in_pipeline)
                model.compile(optimizer=keras.optimizers.Adam(1e-3),
                              jit_compile=jit_compile)
            dataset = model.preprocess(*pairs, batch_size=RAG_BATCH)
            if in_pipeline:
                dataset = with_retrieved_passages(
                    dataset, index, model.rag.query_encoder, NUM_DOCS, passage_ids
                )
            rate = steps_per_second(model, sharded(dataset.prefetch(2)))
            if model.jit_compile is not jit_compile:
                raise RuntimeError(f"Keras set jit_compile={model.jit_compile}")
            return rate

        return run

    record("rag_faiss", run_rag(in_pipeline=False))
    record("rag_pipeline", run_rag(in_pipeline=True))
    record("rag_pipeline_xla", run_rag(in_pipeline=True, jit_compile=True))  # Last.


# --------------------------------------------------------------------------
# The parent: clusters of 1 and 2 workers, ratios, JSON and PNG.
# --------------------------------------------------------------------------


def _free_ports(count):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_cluster(num_workers, folder, index_dir, steps):
    """Runs the worker program on a localhost cluster; returns worker 0's results."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(num_workers)]}
    processes, outputs = [], []
    for task in range(num_workers):
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT),
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": task}}))
        out = folder / f"{num_workers}_workers_{task}.json"
        outputs.append(out)
        processes.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", str(out), index_dir, str(steps)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        ))
    deadline = time.time() + PROCESS_TIMEOUT
    crashes = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            _, stderr = process.communicate()
        if process.returncode != 0:
            crashes.append(f"exit {process.returncode}: {stderr[-600:]}")
    # A worker that died (e.g. inside TensorFlow) keeps the runs it finished.
    workers = [json.loads(out.read_text()) if out.exists() else {} for out in outputs]
    for result in workers:
        for name in RUNS:
            result.setdefault(name, {"error": "worker died before this run ended: "
                                              + " | ".join(crashes)})
    for name in RUNS:  # A step is global: every worker runs it at the same rate.
        rates = [w[name].get("steps_per_second") for w in workers]
        if all(rate is not None for rate in rates):
            workers[0][name]["workers_spread"] = float(max(rates) / min(rates) - 1)
    return workers[0]


def _ratio(a, b):
    if a is None or b is None:
        return None
    return float(a / b)


def summarize(clusters):
    rates = {
        workers: {name: result[name].get("steps_per_second") for name in RUNS}
        for workers, result in clusters.items()
    }
    ratios = {
        f"{name}_2_vs_1_workers": _ratio(rates[2][name], rates[1][name]) for name in RUNS
    }
    for workers in (1, 2):
        ratios[f"rag_pipeline_vs_faiss_{workers}_workers"] = _ratio(
            rates[workers]["rag_pipeline"], rates[workers]["rag_faiss"])
        ratios[f"rag_pipeline_xla_vs_faiss_{workers}_workers"] = _ratio(
            rates[workers]["rag_pipeline_xla"], rates[workers]["rag_faiss"])
    errors = {
        f"{workers}_workers/{name}": result[name]["error"]
        for workers, result in clusters.items() for name in RUNS if "error" in result[name]
    }
    return rates, ratios, errors


def plot(rates, ratios, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from results_io import save_figure

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    positions = np.arange(len(RUNS))
    for offset, workers in ((-0.2, 1), (0.2, 2)):
        values = [rates[workers][name] or 0.0 for name in RUNS]
        axes[0].bar(positions + offset, values, 0.4, label=f"{workers} worker(s)")
    axes[0].set_xticks(positions, RUNS, rotation=15)
    axes[0].set_ylabel("training steps / s (global batch)")
    axes[0].set_title(
        "MultiWorkerMirroredStrategy on localhost\n(2 CPU cores shared with other jobs)"
    )
    axes[0].legend()
    names = [k for k, v in ratios.items() if v is not None]
    axes[1].barh(names, [ratios[k] for k in names], color="tab:gray")
    axes[1].axvline(1.0, color="black", linewidth=0.8)
    axes[1].set_xlabel("ratio of steps / s")
    axes[1].set_title("side-by-side ratios")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 20)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from results_io import write_json

    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        index_dir = str(folder / "index")
        save_index(index_dir)
        clusters = {workers: run_cluster(workers, folder, index_dir, steps)
                    for workers in (1, 2)}
    rates, ratios, errors = summarize(clusters)
    for name in RUNS:
        print(f"{name:18s} 1 worker {rates[1][name] or float('nan'):7.2f} steps/s   "
              f"2 workers {rates[2][name] or float('nan'):7.2f} steps/s")
    for name, value in ratios.items():
        print(f"{name:40s} {value if value is not None else float('nan'):.3f}")
    for name, error in errors.items():
        print(f"FAILED {name}: {error}")
    suffix = "_quick" if args.quick else ""
    results = {
        "benchmark": "distributed_bench",
        "conditions": {
            "strategy": "MultiWorkerMirroredStrategy, worker processes on 127.0.0.1",
            "global_batch": {"distiller": DISTILLER_BATCH, "rag": RAG_BATCH},
            "timed_steps": steps, "warmup_steps": WARMUP_STEPS,
            "rag": {"passages": 978, "num_docs": NUM_DOCS, "index": "Flat (exact)"},
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "note": "a 2-core machine shared with other jobs: 2 workers split the same "
                    "2 cores (no extra hardware); figures move with the load",
        },
        "steps_per_second": {f"{w}_workers": r for w, r in rates.items()},
        "ratios": ratios,
        "workers_spread": {f"{w}_workers": {n: c[n].get("workers_spread") for n in RUNS}
                           for w, c in clusters.items()},
        "errors": errors,
        "seconds": time.time() - started,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(results, RESULTS / f"distributed_bench{suffix}.json")
    plot(rates, ratios, RESULTS / f"distributed_bench{suffix}.png")
    print(f"wrote {RESULTS / f'distributed_bench{suffix}.json'} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
