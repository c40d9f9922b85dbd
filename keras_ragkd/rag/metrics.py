"""Answer metrics for extractive/generative QA: exact match and token F1.

Both follow the SQuAD conventions: answers are normalised (lower case,
punctuation and the articles "a", "an", "the" removed, whitespace collapsed)
before comparison. Accents are stripped too, because the uncased WordPiece
vocabulary the generators use cannot spell them.
"""

import collections
import re
import string
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text):
    """Normalises an answer string for comparison.

    Args:
        text: str, an answer.

    Returns:
        The lower-cased string without punctuation, articles and repeated
        whitespace.

    Example:

    >>> normalize_answer("The  Hague!")
    'hague'
    >>> normalize_answer("Bogotá")
    'bogota'
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str. Received: text={text!r}")
    text = unicodedata.normalize("NFD", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction, reference):
    """Returns 1.0 if the normalised strings are equal, else 0.0.

    Args:
        prediction: str, the generated answer.
        reference: str, the gold answer.

    Example:

    >>> exact_match("paris", "Paris.")
    1.0
    """
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction, reference):
    """Returns the F1 overlap of the normalised answers' word tokens.

    Args:
        prediction: str, the generated answer.
        reference: str, the gold answer.

    Example:

    >>> round(token_f1("new delhi city", "New Delhi"), 2)
    0.8
    """
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(reference).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions, references):
    """Averages exact match and token F1 over paired lists of answers.

    Args:
        predictions: list of str.
        references: list of str, same length as `predictions`.

    Returns:
        A dict `{"exact_match": float, "token_f1": float}`.

    Example:

    >>> answer_scores(["paris", "rome"], ["Paris", "Madrid"])
    {'exact_match': 0.5, 'token_f1': 0.5}
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references) or not references:
        raise ValueError(
            "`predictions` and `references` must be non-empty lists of the "
            f"same length. Received: len(predictions)={len(predictions)}, "
            f"len(references)={len(references)}"
        )
    pairs = list(zip(predictions, references))
    return {
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / len(pairs),
        "token_f1": sum(token_f1(p, r) for p, r in pairs) / len(pairs),
    }
