"""Hybrid retrieval benchmark: MiniLM dense vs TF-IDF lexical vs their fusion.

On the countryinfo knowledge base (978 passages), side by side in one run:

1. recall@n (n = 1, 3, 5: is the gold passage among the first n?) of
   dense-only (`PassageRetriever`, all-MiniLM-L6-v2), lexical-only (TF-IDF
   cosine, the `HybridRetriever`'s in-graph lexical scores) and
   `HybridRetriever` (weighted fusion over a sweep of `lexical_weight`, and
   reciprocal-rank fusion) on the held-out countries' questions, all types,
   in the training wording and in the reworded wording; per question type.
2. Swapped capitals: every held-out capital passage names another held-out
   capital (`keras_ragkd.data.derange_facts`); per system the share of
   capital questions (both wordings) whose top passage is that country's
   (swapped) passage,
   and the share whose top passage is the one that now names the country's
   true capital (the confusion of "The capital of Bermuda is Ottawa." for
   Canada).
3. The faiss and tensor backends of the hybrid retriever: same passages?
4. Latency per query of each retriever (query vectors given) at batch 1
   and 32, both backends, and of the two query encoders (MiniLM, TF-IDF).
5. Size of the lexical weight (sparse COO) against a dense TF-IDF matrix,
   and of exported SavedModels (in-graph backend) with and without it.

Usage:

    python benchmarks/hybrid_retrieval_bench.py          # ~8 min on 2 shared cores
    python benchmarks/hybrid_retrieval_bench.py --quick  # fewer timing rounds

Writes `benchmarks/results/hybrid_retrieval_bench.json` and `.png`
(`hybrid_retrieval_bench_quick.*` with `--quick`).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import faiss  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd.data.countries import country_passages  # noqa: E402
from keras_ragkd.data.countries import country_questions  # noqa: E402
from keras_ragkd.data.countries import country_split  # noqa: E402
from keras_ragkd.data import derange_facts  # noqa: E402
from keras_ragkd.retrieval import HybridRetriever  # noqa: E402
from keras_ragkd.retrieval import MiniLMEncoder  # noqa: E402
from keras_ragkd.retrieval import PassageIndex  # noqa: E402
from keras_ragkd.retrieval import PassageRetriever  # noqa: E402
from keras_ragkd.retrieval import TfidfEncoder  # noqa: E402
from keras_ragkd.retrieval import TfidfQueryEncoder  # noqa: E402
from keras_ragkd.retrieval.passage import as_passages  # noqa: E402
from keras_ragkd.retrieval.passage import passage_text  # noqa: E402
from results_io import save_figure  # noqa: E402
from results_io import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
K = 5
NUM_DOCS = (1, 3, 5)
CANDIDATES = 50
DEFAULT_SYSTEM = "hybrid weighted 0.25"
SYSTEMS = {
    "dense (MiniLM)": None,
    "lexical (TF-IDF)": None,
    "hybrid weighted 0.1": {"fusion": "weighted", "lexical_weight": 0.1},
    "hybrid weighted 0.25": {"fusion": "weighted", "lexical_weight": 0.25},
    "hybrid weighted 0.5": {"fusion": "weighted", "lexical_weight": 0.5},
    "hybrid weighted 1.0": {"fusion": "weighted", "lexical_weight": 1.0},
    "hybrid rrf c=10": {"fusion": "rrf", "rrf_constant": 10.0},
    "hybrid rrf c=60": {"fusion": "rrf", "rrf_constant": 60.0},
}


def swapped_capitals(passages):
    """`(passages, questions)`: held-out capitals deranged; the questions are
    the held-out capital questions of both wordings, with `"answer"` (the
    swapped capital) and `"original_answer"`."""
    _, test = country_split()
    questions = country_questions("test", types=["capital"])
    swapped, deranged = derange_facts(passages, questions, test, seed=0)
    answers = {q["passage_id"]: (q["answer"], q["original_answer"]) for q in deranged}
    reworded = [
        dict(q, answer=answers[q["passage_id"]][0], original_answer=answers[q["passage_id"]][1])
        for q in country_questions("test", types=["capital"], wording="reworded")
    ]
    return swapped, deranged + reworded


def encode_everything(encoder, passages, swapped, question_sets):
    """MiniLM vectors of the passages (the swapped ones re-encoded only where
    they changed) and of every question set."""
    texts = [passage_text(p) for p in as_passages(passages)]
    vectors = encoder.encode(texts, batch_size=128, verbose=0)
    changed = [i for i, (a, b) in enumerate(zip(passages, swapped)) if a != b]
    swapped_vectors = vectors.copy()
    swapped_vectors[changed] = encoder.encode(
        [passage_text(p) for p in as_passages([swapped[i] for i in changed])], verbose=0
    )
    questions = {
        name: encoder.encode([q["question"] for q in qs], batch_size=128, verbose=0)
        for name, qs in question_sets.items()
    }
    return vectors, swapped_vectors, questions


def make_retrievers(index, tfidf, backend="faiss", output="rows"):
    """One retrieval function per system: query dict → `output` `(batch, K)`
    (`"rows"`, or `"doc_scores"`: the lexical-only system has none)."""
    retrievers = {"dense (MiniLM)": PassageRetriever(index, k=K, backend=backend)}
    lexical_only = HybridRetriever(index, tfidf, k=K, backend=backend, candidates=CANDIDATES)
    retrievers["lexical (TF-IDF)"] = lexical_only
    for name, options in SYSTEMS.items():
        if options is not None:
            retrievers[name] = HybridRetriever(
                index, tfidf, k=K, backend=backend, candidates=CANDIDATES, **options
            )

    def as_function(name, retriever):
        if name == "dense (MiniLM)":
            return tf.function(lambda q: retriever(q["dense"])["rows"])
        if name == "lexical (TF-IDF)":
            return tf.function(
                lambda q: tf.math.top_k(retriever.lexical_scores(q["lexical"]), K).indices
            )
        return tf.function(lambda q: retriever(q)["rows"])

    if output == "doc_scores":
        dense = retrievers.pop("dense (MiniLM)")
        del retrievers["lexical (TF-IDF)"]
        functions = {"dense (MiniLM)": tf.function(lambda q: dense(q["dense"])["doc_scores"])}
        for name, retriever in retrievers.items():
            functions[name] = tf.function(lambda q, r=retriever: r(q)["doc_scores"])
        return functions
    return {name: as_function(name, r) for name, r in retrievers.items()}


def recall_at(rows, gold):
    return {f"recall_at_{n}": float(np.mean(np.any(rows[:, :n] == gold[:, None], axis=1)))
            for n in NUM_DOCS}


def evaluate_heldout(functions, queries, questions, index):
    gold = np.array([index.row_of(q["passage_id"]) for q in questions])
    types = sorted({q["type"] for q in questions})
    results = {}
    for name, function in functions.items():
        rows = function(queries).numpy()
        row = recall_at(rows, gold)
        row["per_type"] = {
            t: recall_at(rows[[q["type"] == t for q in questions]],
                         gold[[q["type"] == t for q in questions]])
            for t in types
        }
        results[name] = row
    return results


def posterior_on_gold(doc_scores_function, queries, rows, gold, num_docs=3, scale=10.0):
    """Mean `P(z = gold | x) = softmax(scale * doc_scores)` over the first
    `num_docs` passages: what a RAG model's marginal would weigh the country's
    passage with at the default `doc_score_scale` (None without doc scores)."""
    if doc_scores_function is None:
        return None
    logits = scale * doc_scores_function(queries).numpy()[:, :num_docs]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(probabilities * (rows[:, :num_docs] == gold[:, None]), axis=1)))


def evaluate_swapped(functions, queries, questions, index, doc_score_functions):
    gold = np.array([index.row_of(q["passage_id"]) for q in questions])
    holder = {}  # capital -> row of the swapped passage that now names it
    for q in questions:
        holder[q["answer"]] = index.row_of(q["passage_id"])
    confusion = np.array([holder[q["original_answer"]] for q in questions])
    results = {}
    for name, function in functions.items():
        rows = function(queries).numpy()
        results[name] = {
            "top_passage_is_the_country_s": float(np.mean(rows[:, 0] == gold)),
            "posterior_on_the_country_s_passage": posterior_on_gold(
                doc_score_functions.get(name), queries, rows, gold),
            "top_passage_names_the_true_capital": float(np.mean(rows[:, 0] == confusion)),
            **recall_at(rows, gold),
            "examples_missed": [
                {"question": q["question"], "top_passage": index.passages[r].text}
                for q, r, g in zip(questions, rows[:, 0], gold) if r != g
            ][:5],
        }
    return results


def backend_agreement(index, tfidf, queries):
    agreement = {}
    for name, options in SYSTEMS.items():
        if options is None:
            continue
        rows = {
            backend: HybridRetriever(index, tfidf, k=K, backend=backend,
                                     candidates=CANDIDATES, **options)(queries)["rows"].numpy()
            for backend in ("faiss", "tensor")
        }
        agreement[name] = float(np.mean(np.all(rows["faiss"] == rows["tensor"], axis=1)))
    return agreement


def best_seconds(functions, repeats, warmup=2):
    """Round-robin timing; each function's best time over `repeats` rounds."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def latency(index, tfidf, queries, texts, dense_encoder, lexical_encoder, repeats):
    """Milliseconds per query at batch 1 and 32, per system and backend."""
    timed_systems = ("dense (MiniLM)", "lexical (TF-IDF)", DEFAULT_SYSTEM, "hybrid rrf c=60")
    rows = []
    functions = {}
    for backend in ("faiss", "tensor"):
        made = make_retrievers(index, tfidf, backend)
        for name in timed_systems:
            if name == "lexical (TF-IDF)" and backend == "faiss":
                continue  # the lexical scores are in-graph in both backends
            functions[(name, backend)] = made[name]
    dense_call = tf.function(lambda t: dense_encoder(t))
    lexical_call = tf.function(lambda t: lexical_encoder(t))
    for batch in (1, 32):
        batch_queries = {key: tf.constant(value[:batch]) for key, value in queries.items()}
        batch_texts = tf.constant(texts[:batch])
        calls = {
            f"{name} [{backend}]": (lambda f=f: f(batch_queries).numpy())
            for (name, backend), f in functions.items()
        }
        calls["query encoder: MiniLM"] = lambda: dense_call(batch_texts).numpy()
        calls["query encoder: TF-IDF"] = lambda: lexical_call(batch_texts).numpy()
        for name, seconds in best_seconds(calls, repeats).items():
            rows.append({"batch": batch, "system": name,
                         "ms_per_query": seconds * 1e3 / batch,
                         "ms_per_batch": seconds * 1e3})
            print(f"  batch {batch:3d} {name:40s} {seconds * 1e3 / batch:8.3f} ms/query")
    return rows


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def sizes(index, tfidf):
    """Lexical weight bytes (sparse vs dense) and exported SavedModel sizes."""
    hybrid = HybridRetriever(index, tfidf, k=K, backend="tensor")
    num_passages, vocabulary = hybrid.lexical_shape
    nnz = int(hybrid.lexical_values.shape[0])
    result = {
        "num_passages": num_passages,
        "vocabulary_terms": vocabulary,
        "nonzeros": nnz,
        "lexical_sparse_coo_bytes": nnz * (4 + 4 + 4),
        "lexical_dense_float32_bytes": num_passages * vocabulary * 4,
        "dense_embeddings_bytes": int(index.embeddings.nbytes),
    }
    with tempfile.TemporaryDirectory() as folder:
        dense_input = keras.Input((index.dim,))
        lexical_input = keras.Input((vocabulary,))
        dense_model = keras.Model(
            dense_input, PassageRetriever(index, k=K, backend="tensor")(dense_input)["rows"]
        )
        hybrid_model = keras.Model(
            [dense_input, lexical_input],
            hybrid({"dense": dense_input, "lexical": lexical_input})["rows"],
        )
        for name, model in (("dense", dense_model), ("hybrid", hybrid_model)):
            path = os.path.join(folder, name)
            model.export(path, verbose=False)
            result[f"savedmodel_{name}_retriever_bytes"] = folder_bytes(path)
    return result


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(SYSTEMS)
    figure, axes = plt.subplots(2, 2, figsize=(15, 10))
    x = np.arange(len(names))
    axis = axes[0, 0]
    for offset, (label, key, n) in zip(
        (-0.3, -0.1, 0.1, 0.3),
        [("held-out r@3", "heldout", 3), ("held-out r@5", "heldout", 5),
         ("reworded r@3", "reworded", 3), ("reworded r@5", "reworded", 5)],
    ):
        axis.bar(x + offset, [results[key][s][f"recall_at_{n}"] for s in names], 0.2,
                 label=label)
    axis.set(xticks=x, ylim=(0.8, 1.005), ylabel="recall@num_docs",
             title="held-out countries' questions (all types)")
    axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    axis.legend(fontsize=8)

    axis = axes[0, 1]
    swapped = results["swapped_capitals"]
    axis.bar(x - 0.2, [swapped[s]["top_passage_is_the_country_s"] for s in names], 0.4,
             label="top passage = the country's (swapped) passage")
    axis.bar(x + 0.2, [swapped[s]["top_passage_names_the_true_capital"] for s in names], 0.4,
             label="top passage = the one naming the true capital")
    axis.set(xticks=x, ylim=(0, 1.05), title="swapped held-out capitals (both wordings)")
    axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    axis.legend(fontsize=8)

    axis = axes[1, 0]
    rows = results["latency"]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    y = np.arange(len(systems))
    for offset, batch in ((-0.2, 1), (0.2, 32)):
        values = {r["system"]: r["ms_per_query"] for r in rows if r["batch"] == batch}
        axis.barh(y + offset, [values[s] for s in systems], 0.4, label=f"batch {batch}")
    axis.set(yticks=y, xscale="log", xlabel="ms per query (best of rounds)",
             title="latency per query")
    axis.set_yticklabels(systems, fontsize=7)
    axis.legend(fontsize=8)

    axis = axes[1, 1]
    per_type = {s: results["heldout"][s]["per_type"] for s in
                ("dense (MiniLM)", "lexical (TF-IDF)", DEFAULT_SYSTEM, "hybrid rrf c=60")}
    types = list(next(iter(per_type.values())))
    t = np.arange(len(types))
    for offset, (system, values) in zip((-0.3, -0.1, 0.1, 0.3), per_type.items()):
        axis.bar(t + offset, [values[q]["recall_at_1"] for q in types], 0.2, label=system)
    axis.set(xticks=t, ylabel="recall@1", title="held-out questions: recall@1 per type")
    axis.set_xticklabels(types, rotation=20, fontsize=8)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    started = time.perf_counter()
    results = {
        "mode": "quick" if args.quick else "full",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "tensorflow": tf.__version__,
                    "faiss": faiss.__version__},
        "setup": {
            "passages": "countryinfo, 978 passages, encoded as 'title. text'",
            "dense": "all-MiniLM-L6-v2 (MiniLMEncoder, sequence_length 64), FAISS Flat",
            "lexical": "TfidfEncoder fitted on the passages (word 1-2-grams, sklearn "
                       "smooth idf, L2-normalised, no SVD): cosine of TF-IDF vectors",
            "k": K, "candidates_per_list": CANDIDATES,
            "questions": "held-out countries (country_split seed 0), all types; "
                         "'reworded' = country_questions(wording='reworded')",
        },
        "load_average": {"start": os.getloadavg()[0]},
    }
    passages = country_passages()
    swapped, swapped_questions = swapped_capitals(passages)
    question_sets = {
        "heldout": country_questions("test"),
        "reworded": country_questions("test", wording="reworded"),
        "swapped_capitals": swapped_questions,
    }
    print("Encoding passages and questions with MiniLM, fitting TF-IDF")
    encoder = MiniLMEncoder(sequence_length=64)
    vectors, swapped_vectors, dense_queries = encode_everything(
        encoder, passages, swapped, question_sets
    )
    texts = [passage_text(p) for p in as_passages(passages)]
    tfidf = TfidfEncoder(dim=8).fit(texts)
    lexical_encoder = TfidfQueryEncoder.from_encoder(tfidf, project=False)
    queries = {
        name: {"dense": dense_queries[name],
               "lexical": lexical_encoder(tf.constant([q["question"] for q in qs])).numpy()}
        for name, qs in question_sets.items()
    }
    index = PassageIndex.from_embeddings(passages, vectors)
    swapped_index = PassageIndex.from_embeddings(swapped, swapped_vectors)
    functions = make_retrievers(index, tfidf)
    swapped_functions = make_retrievers(swapped_index, tfidf)
    for name in ("heldout", "reworded"):
        results[name] = evaluate_heldout(functions, queries[name], question_sets[name], index)
        results[f"{name}_questions"] = len(question_sets[name])
    results["swapped_capitals"] = evaluate_swapped(
        swapped_functions, queries["swapped_capitals"], swapped_questions, swapped_index,
        make_retrievers(swapped_index, tfidf, output="doc_scores"),
    )
    results["swapped_capitals_questions"] = len(swapped_questions)
    for name in SYSTEMS:
        h, r, s = (results[key][name] for key in ("heldout", "reworded", "swapped_capitals"))
        posterior = s["posterior_on_the_country_s_passage"]
        print(f"  {name:22s} held-out r@1/3/5 {h['recall_at_1']:.3f} {h['recall_at_3']:.3f} "
              f"{h['recall_at_5']:.3f} | reworded {r['recall_at_1']:.3f} {r['recall_at_3']:.3f} "
              f"{r['recall_at_5']:.3f} | swapped: top = country's "
              f"{s['top_passage_is_the_country_s']:.3f}, names the true capital "
              f"{s['top_passage_names_the_true_capital']:.3f}, P(z=country's) "
              f"{'-' if posterior is None else f'{posterior:.3f}'}")
    print("faiss vs tensor backend (hybrid): share of queries with the same passages")
    results["backend_agreement"] = {
        name: backend_agreement(index if name != "swapped_capitals" else swapped_index,
                                tfidf, queries[name])
        for name in question_sets
    }
    print(json.dumps(results["backend_agreement"], indent=2))
    print("Latency per query")
    results["latency"] = latency(
        index, tfidf, queries["heldout"], [q["question"] for q in question_sets["heldout"]],
        encoder, lexical_encoder, repeats=5 if args.quick else 20,
    )
    print("Sizes")
    results["sizes"] = sizes(index, tfidf)
    print(json.dumps(results["sizes"], indent=2))
    dense, hybrid = results["swapped_capitals"]["dense (MiniLM)"], results["swapped_capitals"][
        DEFAULT_SYSTEM]
    results["summary"] = {
        "default_hybrid": DEFAULT_SYSTEM,
        **{f"{key}_recall_at_{n}_{system}": results[key][name][f"recall_at_{n}"]
           for key in ("heldout", "reworded") for n in (3, 5)
           for system, name in (("dense", "dense (MiniLM)"), ("lexical", "lexical (TF-IDF)"),
                                ("hybrid", DEFAULT_SYSTEM))},
        "swapped_top_passage_is_the_country_s_dense": dense["top_passage_is_the_country_s"],
        "swapped_top_passage_is_the_country_s_hybrid": hybrid["top_passage_is_the_country_s"],
        "backends_agree_min": min(v for agreement in results["backend_agreement"].values()
                                  for v in agreement.values()),
    }
    results["total_seconds"] = time.perf_counter() - started
    results["load_average"]["end"] = os.getloadavg()[0]
    print("Summary:", json.dumps(results["summary"], indent=2))
    os.makedirs(RESULTS, exist_ok=True)
    name = "hybrid_retrieval_bench_quick" if args.quick else "hybrid_retrieval_bench"
    write_json(results, os.path.join(RESULTS, f"{name}.json"))
    plot(results, os.path.join(RESULTS, f"{name}.png"))
    print(f"Wrote {RESULTS}/{name}.json and .png in {results['total_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
