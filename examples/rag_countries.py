"""Retrieval-augmented QA on countryinfo facts, answered for unseen countries.

Builds the countryinfo knowledge base (a FAISS index of MiniLM embeddings),
trains a small RAG model with a copy decoder for a bounded time on the
training countries (with counterfactual passages, so it learns to read), then
prints exact match on held-out countries, a few answers with their retrieved
passages, and a hot swap: the same model, given an index in which France's
capital is another city, answers with that city.

Run: `python examples/rag_countries.py [--seconds 200] [--generator small]`.
"""

import argparse
import collections
import time

import keras
import numpy as np

from keras_ragkd.data import country_passages
from keras_ragkd.data import country_questions
from keras_ragkd.data import country_split
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import TimeLimit
from keras_ragkd.rag import answer_scores
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.rag import counterfactual_augment
from keras_ragkd.rag import exact_match
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import load_minilm_encoder
from keras_ragkd.text import load_minilm_tokenizer


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=200.0, help="training time budget")
    parser.add_argument("--generator", default="small",
                        help="tiny, small, base or minilm (pretrained reader)")
    parser.add_argument("--n-docs", type=int, default=3)
    parser.add_argument("--eval-questions", type=int, default=300,
                        help="held-out questions scored (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_data(encoder, seed):
    train_countries, _ = country_split(seed=seed)
    passages = country_passages()
    train_questions = country_questions("train", seed=seed)
    test_questions = country_questions("test", seed=seed)
    train_passages, train_questions = counterfactual_augment(
        passages, train_questions, train_countries, fraction=0.5, seed=seed
    )
    print(f"Knowledge base: {len(passages)} passages; {len(train_questions)} training "
          f"questions; {len(test_questions)} questions on held-out countries.")
    index = PassageIndex.build(passages, encoder, verbose=0)
    train_index = PassageIndex.build(train_passages, encoder, verbose=0)
    texts = [p["text"] for p in passages + train_passages]
    texts += [q[key] for q in train_questions + test_questions for key in ("question", "answer")]
    return index, train_index, train_questions, test_questions, texts


def evaluate(model, questions):
    started = time.perf_counter()
    predictions = model.generate([q["question"] for q in questions])
    seconds = time.perf_counter() - started
    scores = answer_scores(predictions, [q["answer"] for q in questions])
    by_type = collections.defaultdict(list)
    for question, prediction in zip(questions, predictions):
        by_type[question["type"]].append(exact_match(prediction, question["answer"]))
    scores["by_type"] = {t: float(np.mean(v)) for t, v in sorted(by_type.items())}
    scores["seconds_per_question"] = seconds / len(questions)
    return scores, predictions


def show_examples(model, questions, predictions, count=4):
    retrieved = model.retrieve([q["question"] for q in questions[:count]])
    for question, prediction, passages in zip(questions, predictions, retrieved):
        print(f"\nQ: {question['question']}  gold: {question['answer']}  model: {prediction}")
        for passage in passages:
            print(f"   P(z|x)={passage['probability']:.2f}  [{passage['id']}] {passage['text'][:90]}")


def hot_swap(model, encoder, passages):
    question = "What is the capital of France?"
    swapped = [
        dict(p, text="The capital of France is Berlin.") if p["id"] == "france/capital" else p
        for p in passages
    ]
    swapped_model = model.with_index(PassageIndex.build(swapped, encoder, verbose=0))
    before, after = model.generate([question])[0], swapped_model.generate([question])[0]
    print(f"\nHot swap: '{question}' -> '{before}' with the true index, "
          f"'{after}' with an index where France's capital passage says Berlin "
          "(no retraining).")
    return before, after


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    encoder = load_minilm_encoder(sequence_length=32)
    encoder.trainable = False
    index, train_index, train_questions, test_questions, texts = build_data(encoder, args.seed)
    preprocessor = RagPreprocessor.from_texts(load_minilm_tokenizer(), texts)
    model = build_rag_question_answerer(
        train_index, encoder, preprocessor, generator=args.generator, n_docs=args.n_docs
    )
    print(f"Generator parameters: {model.rag.generator.count_params():,}; "
          f"training for at most {args.seconds:.0f} s.")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(
        [q["question"] for q in train_questions],
        [q["answer"] for q in train_questions],
        batch_size=32,
        epochs=1000,
        verbose=2,
        callbacks=[TimeLimit(args.seconds)],
    )
    evaluator = model.with_index(index)
    rng = np.random.RandomState(args.seed)
    questions = test_questions
    if args.eval_questions and args.eval_questions < len(questions):
        questions = [questions[i] for i in sorted(rng.choice(len(questions), args.eval_questions, replace=False))]
    scores, predictions = evaluate(evaluator, questions)
    print(f"\nHeld-out countries ({len(questions)} questions): exact match "
          f"{scores['exact_match']:.3f}, token F1 {scores['token_f1']:.3f}")
    print("Exact match by question type: "
          + ", ".join(f"{t} {v:.2f}" for t, v in scores["by_type"].items()))
    show_examples(evaluator, questions, predictions)
    hot_swap(evaluator, encoder, country_passages())
    return scores


if __name__ == "__main__":
    main()
