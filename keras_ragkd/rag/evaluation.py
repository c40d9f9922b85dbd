"""Evaluation helpers for question answering: scores, by-type scores, latency.

What the demo (`keras_ragkd.demo`) and the RAG benchmark
(`benchmarks/rag_quality_bench.py`) measure, in one place: exact match and
token F1 overall and per question type, answers with a progress bar,
generation latency at batch 1, retrieval recall of the gold passage, and the
share of answers that follow a changed knowledge base.

Questions are dicts as built by `keras_ragkd.data.country_questions`: at least
`"question"` and `"answer"`, and `"type"` / `"passage_id"` where a helper
groups by type or checks retrieval.
"""

import collections
import time

import keras
import numpy as np

from keras_ragkd.rag.metrics import answer_scores
from keras_ragkd.rag.metrics import exact_match


def sample_questions(questions, count, seed=0):
    """A reproducible random subset of `count` questions, in their order.

    Args:
        questions: list of question dicts.
        count: int, how many to keep; `0`/`None` (or at least
            `len(questions)`) keeps them all.
        seed: int, seed of the draw (`np.random.RandomState`).

    Returns:
        A list of question dicts.

    Example:

    >>> questions = [{"question": str(i), "answer": str(i)} for i in range(10)]
    >>> [q["question"] for q in sample_questions(questions, 3, seed=0)]
    ['2', '4', '8']
    """
    if not count or count >= len(questions):
        return list(questions)
    rng = np.random.RandomState(seed)
    return [questions[i] for i in sorted(rng.choice(len(questions), int(count), replace=False))]


def exact_match_by_type(questions, predictions):
    """Mean exact match per question `"type"`, keys sorted.

    Example:

    >>> exact_match_by_type(
    ...     [{"type": "capital", "answer": "Paris"}, {"type": "capital", "answer": "Lima"},
    ...      {"type": "currency", "answer": "EUR"}],
    ...     ["paris", "rome", "eur"])
    {'capital': 0.5, 'currency': 1.0}
    """
    _check_lengths(questions, predictions)
    by_type = collections.defaultdict(list)
    for question, prediction in zip(questions, predictions):
        by_type[question["type"]].append(exact_match(prediction, question["answer"]))
    return {t: float(np.mean(v)) for t, v in sorted(by_type.items())}


def score_answers(questions, predictions, num_examples=8):
    """Exact match and token F1, overall and by question type, with examples.

    Args:
        questions: list of question dicts (`"question"`, `"answer"`,
            `"type"`).
        predictions: list of answer strings, one per question.
        num_examples: int, how many `{"question", "gold", "predicted"}`
            examples to include (the first ones).

    Returns:
        A dict `{"exact_match", "token_f1", "by_type", "examples"}`.

    Example:

    >>> scores = score_answers(
    ...     [{"question": "Capital of France?", "answer": "Paris", "type": "capital"}],
    ...     ["paris"])
    >>> scores["exact_match"], scores["by_type"]
    (1.0, {'capital': 1.0})
    """
    _check_lengths(questions, predictions)
    scores = answer_scores(predictions, [q["answer"] for q in questions])
    scores["by_type"] = exact_match_by_type(questions, predictions)
    scores["examples"] = [
        {"question": q["question"], "gold": q["answer"], "predicted": p}
        for q, p in list(zip(questions, predictions))[:num_examples]
    ]
    return scores


def answer_questions(model, questions, marginalization=None, batch_size=64, verbose=0):
    """`model.generate` over question dicts, with an optional progress bar.

    The questions are answered in batches of `batch_size`, as `generate`
    itself batches them; a last, smaller batch is filled up to `batch_size`
    with copies of its last question (their answers dropped), so the compiled
    generation function sees one batch shape and is traced once rather than
    twice. Examples do not interact in a batch, so the answers are those of
    one `generate` call.

    Args:
        model: a `RagQuestionAnswerer` (anything with `generate`).
        questions: list of question dicts or of strings.
        marginalization: passed to `generate` (`None`: the model's own).
        batch_size: int, questions per compiled call.
        verbose: 0 (silent) or 1 (a Keras progress bar over the questions).

    Returns:
        A list of answer strings.
    """
    texts = [q if isinstance(q, str) else q["question"] for q in questions]
    progress = keras.utils.Progbar(len(texts), unit_name="question") if verbose else None
    answers = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        filler = batch_size - len(batch) if len(texts) > batch_size else 0
        generated = model.generate(batch + batch[-1:] * filler,
                                   marginalization=marginalization, batch_size=batch_size)
        answers.extend(generated[: len(batch)])
        if progress is not None:
            progress.update(len(answers))
    return answers


def evaluate_answers(model, questions, marginalization=None, batch_size=64,
                     num_examples=8, verbose=0):
    """Answers `questions` with `model` and scores them (see `score_answers`).

    Also records `"count"` (questions scored) and `"seconds_per_question"`
    (wall time of batched generation divided by the count: a throughput
    figure, not a batch-1 latency; see `latency_per_question`).

    Args:
        model: anything with `generate(questions, marginalization=...,
            batch_size=...)` returning answer strings (a `RagQuestionAnswerer`).
        questions: list of question dicts (`"question"`, `"answer"`, `"type"`).
        marginalization: passed to `generate` (`None`: the model's own).
        batch_size: int, questions per compiled call.
        num_examples: int, how many answered examples to keep in the scores.
        verbose: 0 (silent) or 1 (a Keras progress bar over the questions).

    Returns:
        The dict of `score_answers` plus `"count"` and `"seconds_per_question"`.

    Example:

    >>> class Capitals:  # any model with `generate`
    ...     def generate(self, questions, marginalization=None, batch_size=64):
    ...         return ["lima" if "Peru" in q else "?" for q in questions]
    >>> questions = [
    ...     {"question": "What is the capital of Peru?", "answer": "Lima", "type": "capital"},
    ...     {"question": "What is the capital of Chad?", "answer": "N'Djamena", "type": "capital"},
    ... ]
    >>> scores = evaluate_answers(Capitals(), questions, batch_size=2)
    >>> scores["exact_match"], scores["by_type"]["capital"], scores["count"]
    (0.5, 0.5, 2)
    """
    started = time.perf_counter()
    predictions = answer_questions(model, questions, marginalization, batch_size, verbose)
    seconds = time.perf_counter() - started
    scores = score_answers(questions, predictions, num_examples)
    scores["count"] = len(questions)
    scores["seconds_per_question"] = seconds / max(len(questions), 1)
    return scores


def latency_per_question(model, questions, marginalization=None):
    """Median seconds to answer one question (batch of 1, greedy), after warm-up.

    The first question is answered once before timing, so tracing and
    compiling the batch-1 generation function are not counted.

    Args:
        model: a `RagQuestionAnswerer`.
        questions: non-empty list of question dicts or strings; each is timed
            once.
        marginalization: passed to `generate`.

    Returns:
        float seconds.
    """
    texts = [q if isinstance(q, str) else q["question"] for q in questions]
    if not texts:
        raise ValueError("`questions` must not be empty. Received: questions=[]")
    model.generate(texts[:1], marginalization=marginalization, batch_size=1)
    times = []
    for text in texts:
        started = time.perf_counter()
        model.generate([text], marginalization=marginalization, batch_size=1)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def compare_latency(models, questions, marginalization=None, rounds=3):
    """Median batch-1 seconds per question of several models, timed in turns.

    The questions are split into `rounds` blocks; each model answers a block
    one question at a time, then the next model the same block, and so on
    (after one warm-up answer each). A load change on a shared machine then
    slows all models alike, so their ratios stay meaningful, where timing one
    model after another would not; within a block a model runs with warm
    caches, as a server answering a stream of questions does.

    Args:
        models: dict of name → `RagQuestionAnswerer`.
        questions: non-empty list of question dicts or strings.
        marginalization: passed to `generate`.
        rounds: int, how many blocks the questions are split into.

    Returns:
        A dict of name → float median seconds.
    """
    texts = [q if isinstance(q, str) else q["question"] for q in questions]
    if not texts:
        raise ValueError("`questions` must not be empty. Received: questions=[]")
    for model in models.values():
        model.generate(texts[:1], marginalization=marginalization, batch_size=1)
    times = {name: [] for name in models}
    for block in np.array_split(np.arange(len(texts)), max(1, min(rounds, len(texts)))):
        for name, model in models.items():
            for i in block:
                started = time.perf_counter()
                model.generate([texts[i]], marginalization=marginalization, batch_size=1)
                times[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in times.items()}


def retrieval_recall(index, questions, k):
    """Share of questions whose gold `"passage_id"` is among the top `k`.

    Args:
        index: a `PassageIndex` with an encoder for string queries.
        questions: list of question dicts with `"question"` and
            `"passage_id"`.
        k: int.
    """
    result = index.search([q["question"] for q in questions], k=k)
    return float(np.mean([q["passage_id"] in ids for q, ids in zip(questions, result.passage_ids)]))


def follow_rate(questions, predictions, key="answer"):
    """Share of predictions that exactly match each question's `key`.

    With questions from `keras_ragkd.data.derange_facts`,
    `key="answer"` is the share of answers that follow the changed knowledge
    base and `key="original_answer"` the share that stuck to the true fact.

    Example:

    >>> follow_rate([{"answer": "Lima", "original_answer": "Paris"}], ["lima"])
    1.0
    """
    _check_lengths(questions, predictions)
    if not questions:
        raise ValueError("`questions` must not be empty. Received: questions=[]")
    return float(np.mean([exact_match(p, q[key]) for q, p in zip(questions, predictions)]))


def _check_lengths(questions, predictions):
    if len(questions) != len(predictions):
        raise ValueError(
            "Expected one prediction per question. Received: "
            f"len(questions)={len(questions)}, len(predictions)={len(predictions)}"
        )
