"""Does a key/value cache pay for the copy decoder? Decoding cost vs length.

A RAG model with a `small` copy generator (untrained: only latency is
measured; TF-IDF retrieval over the countryinfo passages, `num_docs=3`)
answers questions in one compiled function (preprocessing, retrieval, the
generator's encoder and the greedy `tf.while_loop`, as `answer_function`
builds it) for `max_length` in 1, 2, 4, 8, 12, 16, at batch 1 and 32. The
end token is one the model cannot emit, so every call runs `max_length`
steps. A compiled function without the decoding loop gives the fixed cost
(retrieval and the encoder), and `decode` over a `max_length + 1` buffer,
timed alone, the cost of one uncached step.

The uncached loop (`use_cache=False`: `beam_search` over `decode`) decodes
the whole `max_length + 1` buffer at every step, so a step at
`max_length=L` costs what recomputing an `L + 1` prefix costs. The bench
reports the per-step cost ratio `step(12) / step(1)`, the share of the
latency a cache could save at most, `L * (step(L) - step(1)) / latency`,
and the cached loop's latency (`CopyTransformerGenerator.
rag_token_greedy_search`, one token per step) with whether both loops chose
the same token ids.

Run: `python benchmarks/decoder_cache_bench.py` (9 repeats, about 2
minutes on 2 cores) or `--quick` (5 repeats, without `max_length=2`).
"""

import argparse
import os
import statistics
import time

import keras
import tensorflow as tf

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.models import load_minilm_tokenizer
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import TfidfQueryEncoder
from results_io import save_figure
from results_io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BATCH_SIZES = (1, 32)
MAX_LENGTHS = (1, 2, 4, 8, 12, 16)
QUICK_MAX_LENGTHS = (1, 4, 8, 12, 16)
NEVER_EMITTED = -1
PAYS_RATIO = 1.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed calls (median kept)")
    parser.add_argument("--quick", action="store_true", help="5 repeats, 5 lengths")
    args = parser.parse_args(argv)
    args.max_lengths = MAX_LENGTHS
    if args.quick:
        args.repeats, args.max_lengths = 5, QUICK_MAX_LENGTHS
    return args


def build_model():
    passages = country_passages()
    questions = [q["question"] for q in country_questions("all")]
    tfidf = TfidfEncoder(dim=64).fit([p["text"] for p in passages])
    index = PassageIndex.build(passages, tfidf, verbose=0)
    preprocessor = RagPreprocessor.from_texts(
        load_minilm_tokenizer(), [p["text"] for p in passages] + questions
    )
    model = build_rag_question_answerer(
        index, TfidfQueryEncoder.from_encoder(tfidf), preprocessor,
        generator="small", num_docs=3, backend="tensor", dropout=0.0,
    )
    return model, questions


def compiled(model, max_length, use_cache):
    """Questions → greedy RAG-Token ids; `max_length=0` stops after encoding."""

    def answer(questions):
        inputs = model.preprocessor.generate_preprocess(questions)
        context = model.rag.encode_context(inputs, training=False)
        if not max_length:
            return context["encoded"]["encoder_outputs"]
        token_ids, _ = model.rag.decode_context(
            context, start_id=model.preprocessor.start_id, end_id=NEVER_EMITTED, max_length=max_length,
            num_beams=1, vocabulary_size=model.preprocessor.vocabulary_size,
            use_cache=use_cache,
        )
        return token_ids

    return tf.function(answer, input_signature=[tf.TensorSpec([None], tf.string)])


def median_seconds(function, inputs, repeats):
    """Median of `repeats` calls after two warm-up calls (the first traces)."""
    function(inputs)
    outputs = function(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times), outputs


def step_seconds(model, questions, max_length, repeats):
    """One uncached step at `max_length`: `decode` over the `max_length + 1` buffer.

    That is the work `beam_search` asks of the generator at every step (its
    own bookkeeping aside), timed alone on the questions' encoded passages.
    """
    inputs = model.preprocessor.generate_preprocess(questions)
    encoded = model.rag.encode_context(inputs, training=False)["encoded"]
    rows = encoded["encoder_outputs"].shape[0]
    decode = tf.function(lambda ids: model.rag.generator.decode(encoded, ids))
    seconds, _ = median_seconds(decode, tf.fill([rows, max_length + 1], model.preprocessor.start_id), repeats)
    return seconds


def steps_run(token_ids):
    """Columns up to the last one with any non-padding token (the loop's steps)."""
    active = tf.reduce_any(tf.not_equal(token_ids, 0), axis=0).numpy()
    return int(max([i + 1 for i, a in enumerate(active) if a] or [0]))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, batch_size in zip(axes, BATCH_SIZES):
        rows = results["batches"][str(batch_size)]["lengths"]
        lengths = [row["max_length"] for row in rows]
        axis.plot(lengths, [row["latency_ms"] for row in rows], "o-", label="uncached")
        axis.plot(lengths, [row["latency_ms"] - row["cache_saves_at_most_ms"] for row in rows],
                  "o:", label="estimate: every step costs step(1)")
        axis.plot(lengths, [row["cached_latency_ms"] for row in rows], "s--",
                  label="cached (measured)")
        axis.axhline(results["batches"][str(batch_size)]["fixed_ms"], color="grey", ls=":",
                     label="retrieval + encoder (no loop)")
        axis.set_xlabel("max_length (decoding steps)")
        axis.set_ylabel("ms per call")
        axis.set_title(f"batch {batch_size}")
        axis.legend(fontsize=7)
    figure.suptitle("Copy decoder: greedy decoding latency vs length (2 cores)")
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    model, questions = build_model()
    results = {
        "mode": "quick" if args.quick else "full",
        "repeats": args.repeats,
        "generator": "small",
        "num_docs": model.rag.num_docs,
        "source_length": model.preprocessor.question_length + model.preprocessor.passage_length,
        "vocabulary_size": model.preprocessor.vocabulary_size,
        "pays_if_step_ratio_above": PAYS_RATIO,
        "batches": {},
    }
    for batch_size in BATCH_SIZES:
        batch = tf.constant(questions[:batch_size])
        fixed, _ = median_seconds(compiled(model, 0, False), batch, args.repeats)
        rows = []
        for max_length in args.max_lengths:
            step = step_seconds(model, batch, max_length, 3 * args.repeats)
            latency, token_ids = median_seconds(
                compiled(model, max_length, False), batch, args.repeats)
            cached, cached_ids = median_seconds(
                compiled(model, max_length, True), batch, args.repeats)
            rows.append({"max_length": max_length, "step_ms": 1000 * step,
                         "latency_ms": 1000 * latency, "steps_run": steps_run(token_ids),
                         "cached_latency_ms": 1000 * cached,
                         "cached_speedup": latency / cached,
                         "identical_ids": bool(tf.reduce_all(token_ids == cached_ids))})
        first_step = rows[0]["step_ms"]
        for row in rows:
            row["step_over_first"] = row["step_ms"] / first_step
            row["cache_saves_at_most_ms"] = max(
                0.0, row["max_length"] * (row["step_ms"] - first_step))
            row["cache_saves_at_most_share"] = row["cache_saves_at_most_ms"] / row["latency_ms"]
            print(f"batch {batch_size:>2} max_length {row['max_length']:>2}: "
                  f"step {row['step_ms']:6.2f} ms = {row['step_over_first']:.2f}x step(1); "
                  f"uncached {row['latency_ms']:7.1f} ms ({row['steps_run']} steps), "
                  f"a cache saves <= {100 * row['cache_saves_at_most_share']:.0f}%; "
                  f"cached {row['cached_latency_ms']:7.1f} ms "
                  f"({row['cached_speedup']:.2f}x faster, identical ids: {row['identical_ids']})")
        at_12 = next(row for row in rows if row["max_length"] == 12)
        results["batches"][str(batch_size)] = {
            "fixed_ms": 1000 * fixed, "lengths": rows,
            "step_ratio_at_12": at_12["step_over_first"],
            "cache_pays": at_12["step_over_first"] > PAYS_RATIO,
            "cached_speedup_at_12": at_12["cached_speedup"],
            "identical_ids": all(row["identical_ids"] for row in rows),
        }
    name = "decoder_cache_bench_quick" if args.quick else "decoder_cache_bench"
    write_json(results, os.path.join(RESULTS, f"{name}.json"))
    plot(results, os.path.join(RESULTS, f"{name}.png"))
    return results


if __name__ == "__main__":
    main()
