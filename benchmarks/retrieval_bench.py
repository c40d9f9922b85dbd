"""Retrieval benchmark: the retrieval layer, FAISS index types, MiniLM encoding.

Everything compared runs side by side in one process:

1. `PassageRetriever(backend="faiss")` (FAISS inside `tf.py_function`, in a
   `tf.function`) vs the raw `faiss.Index.search` it wraps, at batch 1, 32
   and 256: overhead ratio (target <= 1.3 at batch 32).
2. `PassageRetriever(backend="tensor")` vs `keras_rs.layers.BruteForceRetrieval`
   on the same vectors, same `k`, same batch, both `call`s compiled the same
   way (plain `tf.function`, then both with `jit_compile=True`), timed
   alternately: throughput ratio (target >= 1.0). Ours also returns the
   mask, `doc_scores` and passage embeddings.
3. FAISS "Flat" vs "HNSW32" vs "IVF<n>,PQ48" vs the same IVF-PQ with exact
   re-ranking ("...,RFlat"), each over a sweep of its search parameter
   (efSearch / nprobe) with an operating point (cheapest setting reaching
   recall@10 >= 0.9 against exact search): build time, queries/s, recall@10,
   bytes per vector. On two kinds of data, named in each JSON row:
   - real: all-MiniLM-L6-v2 embeddings of the 978 countryinfo passages,
     queried with real questions (also: recall of the gold passage);
   - synthetic clustered embeddings (a Gaussian mixture in a 24-d subspace,
     randomly projected to 384-d, plus noise; queries are noisy held-out
     points) at 100k and 1M vectors (20k with `--quick`). Their similarity
     statistics are reported next to MiniLM's. HNSW32 at 1M is skipped
     when its projected build time does not fit the time budget.
4. MiniLM (all-MiniLM-L6-v2) encoding throughput on the countryinfo passages.

Usage:

    python benchmarks/retrieval_bench.py          # full mode (<= ~15 min)
    python benchmarks/retrieval_bench.py --quick  # 20k vectors, ~1 min

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
from keras_ragkd.data.countries import country_questions  # noqa: E402
from keras_ragkd.retrieval import MiniLMEncoder  # noqa: E402
from keras_ragkd.retrieval import PassageIndex  # noqa: E402
from keras_ragkd.retrieval import PassageRetriever  # noqa: E402
from keras_ragkd.retrieval.passage import as_passage  # noqa: E402
from keras_ragkd.retrieval.passage import passage_text  # noqa: E402
from results_io import save_figure  # noqa: E402
from results_io import write_json  # noqa: E402

DIM = 384
K = 10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


SYNTHETIC = {
    "intrinsic_dim": 24,
    "clusters": 1000,
    "cluster_spread": 0.7,
    "shared_offset_norm": 3.7,
    "ambient_noise": 0.3,
    "query_noise": 0.3,
}
SYNTHETIC_DESCRIPTION = (
    "synthetic clustered embeddings: a mixture of 1000 Gaussians (unit "
    "centres, spread 0.7, plus a shared offset like the common direction of "
    "sentence embeddings) in a 24-d latent space, mapped to 384-d by a random "
    "orthonormal projection, plus isotropic noise (norm ~0.3), L2-normalised; "
    "queries are noisy copies (noise norm ~0.3) of held-out points drawn from "
    "the same mixture"
)


def clustered_embeddings(count, num_queries, seed):
    """`(vectors, queries)` with the structure of real text embeddings (see
    SYNTHETIC_DESCRIPTION); `queries` are noisy copies of held-out points."""
    rng = np.random.default_rng(seed)
    config = SYNTHETIC
    latent_dim = config["intrinsic_dim"]
    projection = np.linalg.qr(rng.standard_normal((DIM, latent_dim)))[0].T
    projection = projection.astype(np.float32)
    offset = rng.standard_normal(latent_dim).astype(np.float32)
    offset *= config["shared_offset_norm"] / np.linalg.norm(offset)
    centres = rng.standard_normal((config["clusters"], latent_dim)).astype(np.float32)

    def draw(size):
        out = np.empty((size, DIM), dtype=np.float32)
        for start in range(0, size, 100_000):  # chunks keep peak memory low
            n = min(100_000, size - start)
            latent = centres[rng.integers(0, len(centres), n)] + offset
            latent += config["cluster_spread"] * rng.standard_normal(
                (n, latent_dim), dtype=np.float32
            )
            chunk = latent @ projection
            faiss.normalize_L2(chunk)
            chunk += noise(n, config["ambient_noise"])
            out[start : start + n] = chunk
        faiss.normalize_L2(out)
        return out

    def noise(n, norm):
        # A float32 scale: a NumPy float64 scalar would make the array float64.
        scale = np.float32(norm / np.sqrt(DIM))
        return scale * rng.standard_normal((n, DIM), dtype=np.float32)

    vectors = draw(count)
    queries = draw(num_queries) + noise(num_queries, config["query_noise"])
    faiss.normalize_L2(queries)
    return vectors, queries


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
    """In-graph brute force: our tensor backend vs keras-rs BruteForceRetrieval.

    Fair by construction: same vectors (non-trainable weights in both), same
    `k`, same batch, each layer's `call` compiled the same way (a plain
    `tf.function`, and both again with `jit_compile=True`), timed alternately
    so both share the same background load. Ours returns its whole output
    dict (rows, mask, doc_scores, passage_embeddings); keras-rs returns
    (scores, ids).
    """
    retriever = PassageRetriever(index, k=K, backend="tensor")
    brute_force = keras_rs.layers.BruteForceRetrieval
    keras_rs_layer = brute_force(candidate_embeddings=np.asarray(index.embeddings), k=K)
    rows = []
    for jit_compile in (False, True):
        ours = tf.function(retriever.call, jit_compile=jit_compile)
        theirs = tf.function(keras_rs_layer.call, jit_compile=jit_compile)
        for batch in batch_sizes:
            batch_tensor = tf.constant(queries[:batch])
            ours_rows = ours(batch_tensor)["rows"].numpy()
            theirs_rows = keras.ops.convert_to_numpy(theirs(batch_tensor)[1])
            agreement = float(np.mean(ours_rows == theirs_rows))
            times = paired_seconds(
                {
                    "ours": lambda: ours(batch_tensor)["rows"].numpy(),
                    "theirs": lambda: theirs(batch_tensor)[1].numpy(),
                },
                repeats,
            )
            ours_time, theirs_time = min(times["ours"]), min(times["theirs"])
            paired_ratio = float(
                np.median(np.array(times["theirs"]) / np.array(times["ours"]))
            )
            rows.append(
                {
                    "jit_compile": jit_compile,
                    "batch": batch,
                    "ours_queries_per_s": batch / ours_time,
                    "keras_rs_queries_per_s": batch / theirs_time,
                    "throughput_ratio_best_of": theirs_time / ours_time,
                    "throughput_ratio_median_paired": paired_ratio,
                    "rounds": len(times["ours"]),
                    "same_ids_fraction": agreement,
                }
            )
            print(
                f"  jit={str(jit_compile):5s} batch {batch:4d}: tensor backend "
                f"{batch / ours_time:8.1f} q/s | keras-rs {batch / theirs_time:8.1f} "
                f"q/s | ratio ours/keras-rs best-of {theirs_time / ours_time:5.2f}, "
                f"median paired {paired_ratio:5.2f} | same ids {agreement:.3f}"
            )
    return rows


def paired_seconds(functions, repeats, warmup=2, max_seconds=20.0, min_repeats=5):
    """Like `best_seconds`, but returns every round's time per function, the
    order alternating between rounds (so drift hits both equally)."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    order = list(functions)
    started = time.perf_counter()
    for round_number in range(repeats):
        if round_number >= min_repeats and time.perf_counter() - started > max_seconds:
            break
        for name in order if round_number % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ivf_pq_factory(count):
    lists = 16 if count < 10_000 else 256 if count <= 200_000 else 1024
    return f"IVF{lists},PQ48"


SEARCH_SWEEPS = {
    "HNSW": ("efSearch", (16, 32, 64, 128, 256)),
    "IVF": ("nprobe", (1, 4, 16, 64)),
}
TARGET_RECALL = 0.9
REFINE_K_FACTOR = 4


def build_faiss_index(factory, vectors, seed):
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    if not index.is_trained:
        downcast = faiss.downcast_index(index)
        if hasattr(downcast, "do_polysemous_training"):
            downcast.do_polysemous_training = False
        if len(vectors) < 10_000:  # the 978-passage anchor: FAISS trains 256
            # PQ centroids from fewer than its advised 39 points each (and
            # warns once per sub-quantizer); accept that for a tiny corpus.
            downcast.pq.cp.min_points_per_centroid = 1
        sample = min(len(vectors), 40 * 1024)
        index.train(vectors[np.random.default_rng(seed).choice(
            len(vectors), size=sample, replace=False
        )])
    index.add(vectors)
    return index, time.perf_counter() - start


def refined(index, vectors, build_seconds):
    """`index` wrapped with exact re-ranking of `REFINE_K_FACTOR * k`
    candidates against the full vectors (FAISS `IndexRefineFlat`)."""
    start = time.perf_counter()
    refine = faiss.IndexRefineFlat(index, faiss.swig_ptr(vectors))
    refine.k_factor = REFINE_K_FACTOR
    return refine, build_seconds + time.perf_counter() - start


def recall_at(found, expected, k):
    return float(np.mean([
        len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, expected)
    ]))


def sweep_search(index, factory, queries, exact_rows, gold_rows):
    """Searches at every setting of the index's search parameter."""
    family = next((f for f in SEARCH_SWEEPS if factory.startswith(f)), None)
    parameter, values = SEARCH_SWEEPS.get(family, (None, (None,)))
    settings = []
    for value in values:
        if parameter is not None:
            faiss.ParameterSpace().set_index_parameter(index, parameter, value)
        search_start = time.perf_counter()
        _, found = index.search(queries, K)
        search = time.perf_counter() - search_start
        setting = {
            "parameter": parameter, "value": value,
            "queries_per_s": len(queries) / search,
            "recall_at_10": 1.0 if exact_rows is None else recall_at(found, exact_rows, K),
        }
        if gold_rows is not None:
            for k in (1, 5, 10):
                setting[f"gold_passage_recall_at_{k}"] = float(
                    np.mean(np.any(found[:, :k] == gold_rows[:, None], axis=1))
                )
        settings.append(setting)
    return settings, found


def bench_index_types(data, vectors, queries, budget_seconds, seed, previous_rows,
                      gold_rows=None):
    """Flat vs HNSW32 vs IVF-PQ (alone and with exact re-ranking) on
    `vectors`, sweeping each index's search parameter.

    Each approximate index reports every setting of its search parameter
    (efSearch / nprobe) and an operating point: the cheapest setting with
    recall@10 >= TARGET_RECALL against exact search (else the best one).
    `gold_rows` (real questions only) adds the recall of the passage that
    answers the question. HNSW32 at >= 1M is skipped when 13x its 100k build
    time (measured 1M/100k ratio ~13-16) would not fit in `budget_seconds`.
    """
    started = time.perf_counter()
    count = len(vectors)
    ivf_pq = ivf_pq_factory(count)
    rows = []
    exact_rows = None
    for factory in ("Flat", "HNSW32", ivf_pq, f"{ivf_pq},RFlat"):
        elapsed = time.perf_counter() - started
        if factory == "HNSW32" and count >= 1_000_000:
            projected = 13 * hnsw_build_seconds(previous_rows, 100_000)
            if elapsed + projected > budget_seconds:
                print(
                    f"  {factory:>12} @ {count}: skipped, projected build "
                    f"{projected:.0f} s exceeds the remaining time budget"
                )
                rows.append({"data": data, "count": count, "factory": factory,
                             "skipped": True, "projected_build_s": projected,
                             "reason": "projected build time exceeds the "
                                       "15-minute budget on 2 shared cores"})
                continue
        if factory.endswith(",RFlat"):
            index, build = refined(index, vectors, build)
            bytes_per_vector += vectors.itemsize * vectors.shape[1]
        else:
            index, build = build_faiss_index(factory, vectors, seed)
            bytes_per_vector = len(faiss.serialize_index(index)) / count
        settings, found = sweep_search(index, factory, queries, exact_rows, gold_rows)
        if exact_rows is None:
            exact_rows = found
        good = [s for s in settings if s["recall_at_10"] >= TARGET_RECALL]
        operating = good[0] if good else max(settings, key=lambda s: s["recall_at_10"])
        rows.append({
            "data": data,
            "count": count,
            "queries": len(queries),
            "factory": factory,
            "refine_k_factor": REFINE_K_FACTOR if factory.endswith(",RFlat") else None,
            "build_s": build,
            "bytes_per_vector": bytes_per_vector,
            "operating_point": operating,
            "operating_point_reaches_target_recall": bool(good),
            "sweep": settings,
        })
        print_settings(factory, count, build, bytes_per_vector, settings, operating)
    return rows


def print_settings(factory, count, build, bytes_per_vector, settings, operating):
    for setting in settings:
        parameter = setting["parameter"]
        label = "" if parameter is None else f"{parameter}={setting['value']}"
        gold = ""
        if "gold_passage_recall_at_5" in setting:
            gold = f" | gold passage r@5 {setting['gold_passage_recall_at_5']:.3f}"
        mark = " <- operating point" if setting is operating and parameter else ""
        print(
            f"  {factory:>18} @ {count:>7} {label:>12}: build {build:6.1f} s | "
            f"{setting['queries_per_s']:9.1f} q/s | recall@10 "
            f"{setting['recall_at_10']:.3f}{gold} | {bytes_per_vector:7.1f} "
            f"B/vector{mark}"
        )


def hnsw_build_seconds(rows, count):
    for row in rows:
        if row["factory"] == "HNSW32" and row["count"] == count and "build_s" in row:
            return row["build_s"]
    return float("inf")


def embedding_statistics(vectors, queries):
    """Similarity structure, to compare synthetic data with real embeddings."""
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 20_000),
                                replace=False)]
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(sample)
    scores, _ = flat.search(queries[:200], K)
    first, second = rng.integers(0, len(sample), (2, 2000))
    pairs = np.sum(sample[first] * sample[second], axis=1)
    centred = sample[:5000] - sample[:5000].mean(axis=0)
    spectrum = np.linalg.svd(centred, compute_uv=False) ** 2
    return {
        "random_pair_cosine_mean": float(pairs.mean()),
        "query_top1_cosine_mean": float(scores[:, 0].mean()),
        "query_top10_cosine_mean": float(scores[:, -1].mean()),
        "participation_ratio_dim": float(spectrum.sum() ** 2 / (spectrum ** 2).sum()),
        "note": "top-k cosines over a <= 20k sample of the vectors",
    }


def bench_countryinfo(num_questions, batch_size=64):
    """MiniLM-encodes the countryinfo passages (timed: encoding throughput)
    and `num_questions` real questions; returns the throughput row, the
    vectors, the question vectors and each question's gold passage row."""
    encoder = MiniLMEncoder(sequence_length=64)
    passages = [as_passage(p) for p in country_passages()]
    texts = [passage_text(p) for p in passages]
    questions = country_questions("all")
    questions = [questions[i] for i in np.random.default_rng(0).permutation(
        len(questions))[:num_questions]]
    encoder.encode(texts[:batch_size], batch_size=batch_size, verbose=0)  # trace
    start = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    print(
        f"  MiniLM: {len(texts)} passages in {seconds:.1f} s = "
        f"{len(texts) / seconds:.1f} passages/s (batch {batch_size}, seq 64)"
    )
    query_vectors = encoder.encode(
        [q["question"] for q in questions], batch_size=batch_size, verbose=0
    )
    row_of = {p.id: row for row, p in enumerate(passages)}
    gold_rows = np.array([row_of[q["passage_id"]] for q in questions])
    throughput = {
        "passages": len(texts),
        "batch_size": batch_size,
        "sequence_length": 64,
        "seconds": seconds,
        "passages_per_s": len(texts) / seconds,
    }
    return throughput, vectors, query_vectors, gold_rows


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
    labels = [f"{r['batch']}{' xla' if r['jit_compile'] else ''}" for r in brute]
    x = np.arange(len(labels))
    axes[0, 1].bar(x - 0.2, [r["ours_queries_per_s"] for r in brute], 0.4,
                   label="PassageRetriever(tensor)")
    axes[0, 1].bar(x + 0.2, [r["keras_rs_queries_per_s"] for r in brute], 0.4,
                   label="keras-rs BruteForceRetrieval")
    axes[0, 1].set(xticks=x, xticklabels=labels, xlabel="batch size", yscale="log",
                   ylabel="queries / s", title="in-graph brute force (same process)")
    axes[0, 1].legend()

    for axis, data in ((axes[1, 0], "synthetic"), (axes[1, 1], "countryinfo")):
        for row in results["index_types"]:
            if row.get("skipped") or not row["data"].startswith(data):
                continue
            sweep = row["sweep"]
            axis.plot([s["recall_at_10"] for s in sweep],
                      [s["queries_per_s"] for s in sweep], "o-",
                      label=f"{row['factory']} @{row['count']}")
        axis.set(yscale="log", xlabel="recall@10 vs exact", ylabel="queries / s",
                 title=f"FAISS index types: {data} data (d=384)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k vectors, ~2 minutes")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped
    quick = args.quick
    started = time.perf_counter()
    budget = 120 if quick else 15 * 60

    layer_count = 20_000 if quick else 100_000
    vectors, queries = clustered_embeddings(layer_count, 256, seed=0)
    print(f"Layer overhead and brute force on {layer_count} synthetic vectors (d={DIM})")
    index = index_of_vectors(vectors)
    repeats = 10 if quick else 30
    results = {
        "mode": "quick" if quick else "full",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "tensorflow": tf.__version__,
                    "faiss": faiss.__version__},
        "data": {
            "synthetic": SYNTHETIC_DESCRIPTION,
            "synthetic_parameters": SYNTHETIC,
            "countryinfo": (
                "real data: all-MiniLM-L6-v2 embeddings (seq 64) of the 978 "
                "countryinfo passages; queries are real questions of "
                "country_questions('all') (random subset), with their gold "
                "passage"
            ),
        },
        "notes": (
            "layer_overhead and tensor_vs_keras_rs use the synthetic vectors "
            "(exact search: timings do not depend on the data). Each "
            "index_types row names its data. Timings are measured "
            "alternately on a machine shared with other processes; "
            "load_average records the 1-minute load of its 2 cores."
        ),
        "load_average": {"start": os.getloadavg()[0]},
    }
    results["layer_overhead"] = bench_layer_overhead(index, queries, (1, 32, 256), repeats)
    results["tensor_vs_keras_rs"] = bench_tensor_vs_keras_rs(
        index, queries, (1, 32, 256), repeats
    )
    del index, vectors

    print("MiniLM encoding throughput and FAISS index types on countryinfo (real)")
    minilm, vectors, queries, gold_rows = bench_countryinfo(500 if quick else 3154)
    results["minilm"] = minilm
    results["embedding_statistics"] = {
        "countryinfo": embedding_statistics(vectors, queries)
    }
    results["index_types"] = bench_index_types(
        "countryinfo (real MiniLM)", vectors, queries, budget, seed=0,
        previous_rows=[], gold_rows=gold_rows,
    )

    print("FAISS index types on synthetic clustered embeddings")
    counts = (20_000,) if quick else (100_000, 1_000_000)
    for count in counts:
        num_queries = 200 if count >= 1_000_000 else 1000 if not quick else 500
        vectors, queries = clustered_embeddings(count, num_queries, seed=count)
        if count == counts[0]:
            results["embedding_statistics"]["synthetic"] = embedding_statistics(
                vectors, queries
            )
        results["index_types"] += bench_index_types(
            "synthetic", vectors, queries,
            budget_seconds=budget - (time.perf_counter() - started) - 60,
            seed=count, previous_rows=results["index_types"],
        )
        del vectors, queries
    print("Similarity structure:", json.dumps(results["embedding_statistics"], indent=2))
    results["total_seconds"] = time.perf_counter() - started
    results["load_average"]["end"] = os.getloadavg()[0]

    at_32 = [r for r in results["layer_overhead"] if r["batch"] == 32][0]
    brute_32 = {r["jit_compile"]: r for r in results["tensor_vs_keras_rs"]
                if r["batch"] == 32}
    graph_ratio = brute_32[False]["throughput_ratio_median_paired"]
    results["summary"] = {
        "faiss_layer_overhead_ratio_batch_32": at_32["overhead_ratio"],
        "faiss_layer_overhead_target_met": at_32["overhead_ratio"] <= 1.3,
        "tensor_vs_keras_rs_ratio_batch_32_tf_function": graph_ratio,
        "tensor_vs_keras_rs_ratio_batch_32_tf_function_best_of":
            brute_32[False]["throughput_ratio_best_of"],
        "tensor_vs_keras_rs_ratio_batch_32_xla":
            brute_32[True]["throughput_ratio_median_paired"],
        "tensor_vs_keras_rs_target_met": graph_ratio >= 1.0,
        "minilm_passages_per_s": results["minilm"]["passages_per_s"],
        "operating_points": [
            {"data": r["data"], "count": r["count"], "factory": r["factory"],
             **{key: r["operating_point"][key] for key in r["operating_point"]
                if key != "parameter"},
             "parameter": r["operating_point"]["parameter"]}
            for r in results["index_types"] if not r.get("skipped")
        ],
        "skipped": [
            f"{r['factory']} @ {r['count']} ({r['data']}): {r['reason']}, "
            f"projected {r['projected_build_s']:.0f} s"
            for r in results["index_types"] if r.get("skipped")
        ],
    }
    print("Summary:", json.dumps(results["summary"], indent=2))

    os.makedirs(RESULTS, exist_ok=True)
    name = "retrieval_bench_quick" if quick else "retrieval_bench"
    json_path = os.path.join(RESULTS, f"{name}.json")
    write_json(results, json_path)
    png_path = os.path.join(RESULTS, f"{name}.png")
    plot(results, png_path)
    print(f"Wrote {json_path} and {png_path} in {results['total_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
