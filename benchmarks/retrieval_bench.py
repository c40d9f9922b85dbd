"""Retrieval benchmark: the retrieval layer, FAISS index types, MiniLM encoding.

Everything compared runs side by side in one process:

1. `PassageRetriever(backend="faiss")` (FAISS inside `tf.py_function`, in a
   `tf.function`) vs the raw `faiss.Index.search` it wraps, at batch 1, 32
   and 256: overhead ratio (target <= 1.3 at batch 32).
2. `PassageRetriever(backend="tensor")` vs `keras_rs.layers.BruteForceRetrieval`
   on the same vectors: throughput ratio (target >= 1.0). Both run in a
   `tf.function`; ours also gathers passage embeddings and recomputes
   `doc_scores`.
3. FAISS "Flat" vs "HNSW32" vs "IVF<n>,PQ48" at 100k and 1M vectors: build
   time, queries/s, recall@10 against exact search, bytes per vector.
   Vectors are random unit vectors of dimension 384 (no cluster structure,
   which is the worst case for approximate indexes: their recall here is far
   below what they reach on real embeddings; see
   tests/retrieval/test_countries_retrieval.py for MiniLM embeddings). IVF
   indexes train on a 32k sample. HNSW32 at 1M is skipped when its projected
   build time does not fit the time budget.
4. MiniLM (all-MiniLM-L6-v2) encoding throughput on the countryinfo passages.

Usage:

    python benchmarks/retrieval_bench.py          # full mode (<= ~15 min)
    python benchmarks/retrieval_bench.py --quick  # 20k vectors, ~2 min

Writes `benchmarks/results/retrieval_bench.json` and `retrieval_bench.png`
(`retrieval_bench_quick.*` with `--quick`).
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import faiss  # noqa: E402
import keras  # noqa: E402
import keras_rs  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd.data.countries import country_passages  # noqa: E402
from keras_ragkd.retrieval import MiniLMEncoder  # noqa: E402
from keras_ragkd.retrieval import PassageIndex  # noqa: E402
from keras_ragkd.retrieval import PassageRetriever  # noqa: E402
from keras_ragkd.retrieval.passage import as_passage  # noqa: E402
from keras_ragkd.retrieval.passage import passage_text  # noqa: E402

DIM = 384
K = 10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def random_unit_vectors(count, seed):
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):  # chunks keep peak memory low
        chunk = rng.standard_normal((min(100_000, count - start), DIM), np.float32)
        vectors[start : start + len(chunk)] = chunk
    faiss.normalize_L2(vectors)
    return vectors


def best_seconds(functions, repeats, warmup=2, max_seconds=20.0, min_repeats=3):
    """Times functions round-robin (they share any background load) and
    returns each one's best time, in seconds, over `repeats` rounds (fewer,
    but at least `min_repeats`, once `max_seconds` have passed)."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    started = time.perf_counter()
    for round_number in range(repeats):
        if round_number >= min_repeats and time.perf_counter() - started > max_seconds:
            break
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def index_of_vectors(vectors):
    passages = [{"id": str(i), "text": ""} for i in range(len(vectors))]
    return PassageIndex(passages, vectors, "Flat")


def bench_layer_overhead(index, queries, batch_sizes, repeats):
    """The faiss-backend layer vs the raw FAISS search it wraps."""
    retriever = PassageRetriever(index, k=K, backend="faiss")
    layer_call = tf.function(retriever.call)
    faiss_index = index.faiss_index
    rows = []
    for batch in batch_sizes:
        batch_queries = queries[:batch]
        batch_tensor = tf.constant(batch_queries)
        best = best_seconds(
            {
                "raw": lambda: faiss_index.search(batch_queries, K),
                "search_arrays": lambda: index.search_arrays(batch_queries, K),
                "layer": lambda: layer_call(batch_tensor)["doc_scores"].numpy(),
            },
            repeats,
        )
        raw, raw_with_gather, layer = best["raw"], best["search_arrays"], best["layer"]
        rows.append(
            {
                "batch": batch,
                "raw_faiss_search_ms": raw * 1e3,
                "index_search_arrays_ms": raw_with_gather * 1e3,
                "layer_faiss_backend_ms": layer * 1e3,
                "overhead_ratio": layer / raw,
            }
        )
        print(
            f"  batch {batch:4d}: raw faiss {raw * 1e3:8.2f} ms | "
            f"index.search_arrays {raw_with_gather * 1e3:8.2f} ms | "
            f"layer(faiss) {layer * 1e3:8.2f} ms | ratio layer/raw "
            f"{layer / raw:5.2f}"
        )
    return rows


def bench_tensor_vs_keras_rs(index, queries, batch_sizes, repeats):
    """In-graph brute force: our tensor backend vs keras-rs BruteForceRetrieval."""
    ours = tf.function(PassageRetriever(index, k=K, backend="tensor").call)
    keras_rs_layer = keras_rs.layers.BruteForceRetrieval(
        candidate_embeddings=np.asarray(index.embeddings), k=K
    )
    theirs = tf.function(keras_rs_layer.call)
    rows = []
    for batch in batch_sizes:
        batch_tensor = tf.constant(queries[:batch])
        ours_rows = ours(batch_tensor)["rows"].numpy()
        theirs_rows = keras.ops.convert_to_numpy(theirs(batch_tensor)[1])
        agreement = float(np.mean(ours_rows == theirs_rows))
        best = best_seconds(
            {
                "ours": lambda: ours(batch_tensor)["rows"].numpy(),
                "theirs": lambda: theirs(batch_tensor)[1].numpy(),
            },
            repeats,
        )
        ours_time, theirs_time = best["ours"], best["theirs"]
        rows.append(
            {
                "batch": batch,
                "ours_queries_per_s": batch / ours_time,
                "keras_rs_queries_per_s": batch / theirs_time,
                "throughput_ratio": theirs_time / ours_time,
                "same_ids_fraction": agreement,
            }
        )
        print(
            f"  batch {batch:4d}: tensor backend {batch / ours_time:9.1f} q/s | "
            f"keras-rs {batch / theirs_time:9.1f} q/s | ratio ours/keras-rs "
            f"{theirs_time / ours_time:5.2f} | same ids {agreement:.3f}"
        )
    return rows


def ivf_pq_factory(count):
    lists = 256 if count <= 200_000 else 1024
    return f"IVF{lists},PQ48"


def bench_index_types(count, num_queries, budget_seconds, seed, previous_rows):
    """Flat vs HNSW32 vs IVF-PQ on `count` random unit vectors.

    HNSW32 at 1M is skipped when 16 times its 100k build time would not fit
    in `budget_seconds` (measured here: 1M took 15.7x the 100k build).
    """
    started = time.perf_counter()
    vectors = random_unit_vectors(count, seed)
    queries = random_unit_vectors(num_queries, seed + 1)
    rows = []
    exact_rows = None
    for factory in ("Flat", "HNSW32", ivf_pq_factory(count)):
        elapsed = time.perf_counter() - started
        if factory == "HNSW32" and count >= 1_000_000:
            projected = 16 * hnsw_build_seconds(previous_rows, 100_000)
            if elapsed + projected > budget_seconds:
                print(
                    f"  {factory:>12} @ {count}: skipped, projected build "
                    f"{projected:.0f} s exceeds the time budget"
                )
                rows.append({"count": count, "factory": factory, "skipped": True,
                             "projected_build_s": projected})
                continue
        index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
        build_start = time.perf_counter()
        if not index.is_trained:
            downcast = faiss.downcast_index(index)
            if hasattr(downcast, "do_polysemous_training"):
                downcast.do_polysemous_training = False
            training = vectors[np.random.default_rng(seed).choice(
                count, size=min(count, 32 * 1024), replace=False
            )]
            index.train(training)
        index.add(vectors)
        build = time.perf_counter() - build_start
        parameters = {}
        if factory == "HNSW32":
            parameters = {"efSearch": 128}
        elif factory.startswith("IVF"):
            parameters = {"nprobe": 32}
        for name, value in parameters.items():
            faiss.ParameterSpace().set_index_parameter(index, name, value)
        search_start = time.perf_counter()
        _, found = index.search(queries, K)
        search = time.perf_counter() - search_start
        if exact_rows is None:
            exact_rows = found
        recall = float(np.mean(
            [len(set(a) & set(b)) / K for a, b in zip(exact_rows, found)]
        ))
        bytes_per_vector = len(faiss.serialize_index(index)) / count
        row = {
            "count": count,
            "factory": factory,
            "search_parameters": parameters,
            "build_s": build,
            "queries_per_s": num_queries / search,
            "recall_at_10": recall,
            "bytes_per_vector": bytes_per_vector,
        }
        rows.append(row)
        print(
            f"  {factory:>12} @ {count:>8}: build {build:7.1f} s | "
            f"{num_queries / search:9.1f} q/s | recall@10 {recall:.3f} | "
            f"{bytes_per_vector:7.1f} B/vector"
        )
        del index
    return rows


def hnsw_build_seconds(rows, count):
    for row in rows:
        if row["factory"] == "HNSW32" and row["count"] == count and "build_s" in row:
            return row["build_s"]
    return float("inf")


def bench_minilm(num_passages, batch_size):
    encoder = MiniLMEncoder(sequence_length=64)
    texts = [passage_text(as_passage(p)) for p in country_passages()][:num_passages]
    encoder.encode(texts[:batch_size], batch_size=batch_size, verbose=0)  # trace
    start = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    print(
        f"  MiniLM: {len(texts)} passages in {seconds:.1f} s = "
        f"{len(texts) / seconds:.1f} passages/s (batch {batch_size}, seq 64)"
    )
    return {
        "passages": len(texts),
        "batch_size": batch_size,
        "sequence_length": 64,
        "seconds": seconds,
        "passages_per_s": len(texts) / seconds,
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 9))
    overhead = results["layer_overhead"]
    axes[0, 0].plot([r["batch"] for r in overhead],
                    [r["overhead_ratio"] for r in overhead], "o-")
    axes[0, 0].axhline(1.3, color="red", linestyle="--", label="target 1.3")
    axes[0, 0].set(xscale="log", xlabel="batch size", ylabel="layer / raw FAISS time",
                   title="faiss backend overhead")
    axes[0, 0].legend()

    brute = results["tensor_vs_keras_rs"]
    batches = [str(r["batch"]) for r in brute]
    x = np.arange(len(batches))
    axes[0, 1].bar(x - 0.2, [r["ours_queries_per_s"] for r in brute], 0.4,
                   label="PassageRetriever(tensor)")
    axes[0, 1].bar(x + 0.2, [r["keras_rs_queries_per_s"] for r in brute], 0.4,
                   label="keras-rs BruteForceRetrieval")
    axes[0, 1].set(xticks=x, xticklabels=batches, xlabel="batch size",
                   ylabel="queries / s", title="in-graph brute force")
    axes[0, 1].legend()

    for row in results["index_types"]:
        if row.get("skipped"):
            continue
        marker = "o" if row["count"] < 1_000_000 else "s"
        axes[1, 0].scatter(row["recall_at_10"], row["queries_per_s"], marker=marker)
        axes[1, 0].annotate(f"{row['factory']} @{row['count'] // 1000}k",
                            (row["recall_at_10"], row["queries_per_s"]), fontsize=8)
    axes[1, 0].set(yscale="log", xlabel="recall@10 vs exact", ylabel="queries / s",
                   title="FAISS index types (random unit vectors, d=384)")

    labels = [f"{r['factory']}\n@{r['count'] // 1000}k" for r in results["index_types"]
              if not r.get("skipped")]
    sizes = [r["bytes_per_vector"] for r in results["index_types"] if not r.get("skipped")]
    axes[1, 1].bar(range(len(sizes)), sizes)
    axes[1, 1].set(xticks=range(len(sizes)), yscale="log", ylabel="bytes / vector",
                   title=f"index size; MiniLM encodes "
                         f"{results['minilm']['passages_per_s']:.0f} passages/s")
    axes[1, 1].set_xticklabels(labels, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)


def write_atomically(path, write):
    """Calls `write(temporary_path)`, then renames the file to `path`."""
    temporary = f"{path}.tmp"
    write(temporary)
    os.replace(temporary, path)


def write_json(results, path):
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k vectors, ~2 minutes")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped
    quick = args.quick
    started = time.perf_counter()
    budget = 150 if quick else 15 * 60

    layer_count = 20_000 if quick else 100_000
    print(f"Layer overhead and brute force on {layer_count} random unit vectors (d={DIM})")
    index = index_of_vectors(random_unit_vectors(layer_count, seed=0))
    queries = random_unit_vectors(256, seed=1)
    repeats = 10 if quick else 30
    results = {
        "mode": "quick" if quick else "full",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "tensorflow": tf.__version__,
                    "faiss": faiss.__version__},
        "vectors": "random unit vectors, dimension 384",
        "notes": (
            "Random unit vectors have no cluster structure: approximate "
            "indexes (HNSW, IVF-PQ) show much lower recall on them than on "
            "real embeddings. Timings are best-of-N, measured round-robin on "
            "a shared machine."
        ),
    }
    results["layer_overhead"] = bench_layer_overhead(index, queries, (1, 32, 256), repeats)
    results["tensor_vs_keras_rs"] = bench_tensor_vs_keras_rs(
        index, queries, (1, 32, 256), repeats
    )
    del index

    print("FAISS index types")
    counts = (20_000,) if quick else (100_000, 1_000_000)
    results["index_types"] = []
    for count in counts:
        results["index_types"] += bench_index_types(
            count,
            num_queries=100 if count >= 1_000_000 else 1000,
            budget_seconds=budget - (time.perf_counter() - started) - 60,
            seed=count,
            previous_rows=results["index_types"],
        )

    print("MiniLM encoding throughput")
    results["minilm"] = bench_minilm(256 if quick else 978, batch_size=64)
    results["total_seconds"] = time.perf_counter() - started

    at_32 = [r for r in results["layer_overhead"] if r["batch"] == 32][0]
    brute_32 = [r for r in results["tensor_vs_keras_rs"] if r["batch"] == 32][0]
    results["summary"] = {
        "faiss_layer_overhead_ratio_batch_32": at_32["overhead_ratio"],
        "faiss_layer_overhead_target_met": at_32["overhead_ratio"] <= 1.3,
        "tensor_vs_keras_rs_throughput_ratio_batch_32": brute_32["throughput_ratio"],
        "tensor_vs_keras_rs_target_met": brute_32["throughput_ratio"] >= 1.0,
        "minilm_passages_per_s": results["minilm"]["passages_per_s"],
    }
    print("Summary:", json.dumps(results["summary"], indent=2))

    os.makedirs(RESULTS, exist_ok=True)
    name = "retrieval_bench_quick" if quick else "retrieval_bench"
    json_path = os.path.join(RESULTS, f"{name}.json")
    write_atomically(json_path, lambda p: write_json(results, p))
    png_path = os.path.join(RESULTS, f"{name}.png")
    write_atomically(png_path, lambda p: plot(results, p))
    print(f"Wrote {json_path} and {png_path} in {results['total_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
