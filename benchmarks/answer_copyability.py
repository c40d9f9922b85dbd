"""Diagnostic: can a pointer into the passage produce the answers' tokens?

A `CopyHead` copies tokens of the prompt. SmolLM2's byte-level BPE writes a
word differently at the start of the assistant turn than inside a sentence
("Luanda" is `L u anda`, "is Luanda." holds `ĠLu anda`), so this script
tokenises every held-out countryinfo answer the way `CausalLMRagPreprocessor`
does, with `answer_leading_space` off (as the teacher was trained) and on, and
counts how often the answer's first token, and all its tokens, occur in the
answer's own gold passage.

Writes `benchmarks/results/answer_copyability.json` (about a minute on 2 cores).

Usage:

    python benchmarks/answer_copyability.py
"""

import collections
import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ragkd.data.countries import country_passages  # noqa: E402
from keras_ragkd.data.countries import country_questions  # noqa: E402
from keras_ragkd.models import llama3_tokenizer_from_gguf  # noqa: E402
from keras_ragkd.models import smollm2_gguf_path  # noqa: E402
from keras_ragkd.rag import CausalLMRagPreprocessor  # noqa: E402
from keras_ragkd.rag.smollm2_recipe import TEACHER  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
LENGTHS = ("question_length", "passage_length", "answer_length")


def token_lists(ids, dropped):
    return [[int(i) for i in row if int(i) not in dropped] for row in np.asarray(ids)]


def copyability(preprocessor, questions, passages):
    """Per question type: the share of answers whose tokens are in their passage."""
    dropped = {preprocessor.padding_id, preprocessor.end_id}
    _, labels = preprocessor(tf.constant([q["question"] for q in questions]),
                             tf.constant([q["answer"] for q in questions]))
    answers = token_lists(labels, dropped)
    gold = token_lists(preprocessor.tokenize_passages(
        [passages[q["passage_id"]] for q in questions]), dropped)
    counts = collections.defaultdict(collections.Counter)
    for question, answer, passage in zip(questions, answers, gold):
        for key in (question["type"], "all"):
            counts[key]["count"] += 1
            counts[key]["first_token"] += answer[0] in passage
            counts[key]["all_tokens"] += set(answer) <= set(passage)
    return {key: {"count": c["count"], "first_token_in_passage": c["first_token"] / c["count"],
                  "all_tokens_in_passage": c["all_tokens"] / c["count"]}
            for key, c in sorted(counts.items())}


def main():
    tokenizer = llama3_tokenizer_from_gguf(smollm2_gguf_path())
    passages = {p["id"]: p["text"] for p in country_passages()}
    questions = [q for q in country_questions("test", seed=0) if q["passage_id"] in passages]
    results = {"questions": len(questions), "tokenizer": "SmolLM2-135M-Instruct (GGUF)"}
    for leading_space in (False, True):
        preprocessor = CausalLMRagPreprocessor(
            tokenizer, answer_leading_space=leading_space, **{k: TEACHER[k] for k in LENGTHS})
        shares = copyability(preprocessor, questions, passages)
        results[f"answer_leading_space={leading_space}"] = shares
        print(f"answer_leading_space={leading_space}: first token in the passage "
              f"{shares['all']['first_token_in_passage']:.3f}, all tokens "
              f"{shares['all']['all_tokens_in_passage']:.3f} ({len(questions)} answers)")
    write_json(results, RESULTS / "answer_copyability.json")


if __name__ == "__main__":
    main()
