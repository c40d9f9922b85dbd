"""Counterfactual knowledge-base augmentation for training readers to copy.

A generator trained on true facts can memorise them instead of reading the
retrieved passage, and then fails on entities whose facts it never saw. Here a
share of the training passages trade facts with other entities' passages of
the same kind, the entity names exchanged ("The capital of France is Lima.",
"The capital of Peru is Paris."), and the questions about them get the changed
answers, so the only way to answer is to read (copy from) the passage.
"""

import re

import numpy as np

from keras_ragkd.validation import check_number


def _group(passage_id):
    return passage_id.rsplit("/", 1)[-1]


def _as_word(name):
    """A pattern matching `name` not inside a longer word."""
    return rf"(?<!\w){re.escape(name)}(?!\w)"


def _rename(text, old, new):
    return re.sub(_as_word(old), lambda match: new, text)


def _renames_cleanly(passage, questions):
    """Whether the passage's title can be renamed without touching a fact.

    It cannot when the title is part of a fact ("Mexico City" for Mexico;
    "Singapore", the capital of Singapore) or of a longer name in the text
    ("South Sudan" for Sudan, "Guinea-Bissau" for Guinea). An answer that is
    the entity itself ("Lima is the capital of which country?") renames.
    """
    name = _as_word(passage["title"])

    def mentions(text):
        return re.search(name, text) is not None

    if not mentions(passage["text"]):
        return False
    if any(
        mentions(q["answer"]) and (q["answer"] != passage["title"] or mentions(q["question"]))
        for q in questions
    ):
        return False
    inside_longer_name = rf"(\b[A-Z][\w']*[ -]|-){name}|{name}(-| [A-Z])"
    return not any(
        re.search(inside_longer_name, text)
        for text in [passage["text"]] + [q["question"] for q in questions]
    )


def _rotations(passages, questions_of, entities, fraction, rng):
    """Maps a chosen passage id to the id of the passage whose facts it takes.

    Per fact group, `round(fraction * n)` of the `n` passages that rename
    cleanly are drawn and their facts rotated along one cycle, so each of
    those facts still sits in exactly one training passage.
    """
    eligible = {}
    for passage in passages:
        if passage["title"] in entities and _renames_cleanly(
            passage, questions_of.get(passage["id"], [])
        ):
            eligible.setdefault(_group(passage["id"]), []).append(passage["id"])
    donor_of = {}
    for group in sorted(eligible):
        ids = eligible[group]
        chosen = [ids[i] for i in rng.permutation(len(ids))[: int(round(fraction * len(ids)))]]
        if len(chosen) > 1:
            donor_of.update(zip(chosen, chosen[1:] + chosen[:1]))
    return donor_of


def counterfactual_augment(passages, questions, entities, fraction=0.5, seed=0):
    """Swaps the facts of a random share of the `entities`' passages.

    Per fact group (from the passage id `"<slug>/<group>"`), a random
    `fraction` of the `entities`' passages trade facts along a cycle: passage
    `C` takes the text of passage `D` with the entity name `D` renamed to `C`,
    and `D`'s questions, renamed the same way, become `C`'s (e.g. `"Lima is
    the capital of which country?"` → `"France"`). A rotation, not a draw
    with replacement, so no fact is left in two training passages and every
    changed question keeps a single answer. Passages whose entity name is
    part of a fact or of a longer name ("Mexico City", "South Sudan") keep
    their true facts, so renaming never invents one. Only `entities` trade
    facts: no other (e.g. held-out) entity's facts enter the training data.

    Args:
        passages: list of dicts `{"id", "title", "text"}`; titles are the
            entity names.
        questions: list of dicts with `"question"`, `"answer"`,
            `"passage_id"` (and optionally `"country"`).
        entities: names (passage titles) whose passages may be changed.
        fraction: float in [0, 1], share of their (cleanly renamable)
            passages changed in each fact group.
        seed: int.

    Returns:
        A tuple `(passages, questions)`: passages in the same order with the
        same ids, and the questions of `entities` (changed or not).

    Example:

    >>> passages = [
    ...     {"id": "a/capital", "title": "Aland", "text": "The capital of Aland is Ax."},
    ...     {"id": "b/capital", "title": "Boland", "text": "The capital of Boland is Bo."},
    ... ]
    >>> questions = [
    ...     {"question": "What is the capital of Aland?", "answer": "Ax", "passage_id": "a/capital"},
    ...     {"question": "What is the capital of Boland?", "answer": "Bo", "passage_id": "b/capital"},
    ... ]
    >>> new_passages, new_questions = counterfactual_augment(
    ...     passages, questions, ["Aland", "Boland"], fraction=1.0)
    >>> [p["text"] for p in new_passages]
    ['The capital of Aland is Bo.', 'The capital of Boland is Ax.']
    >>> [q["answer"] for q in new_questions]
    ['Bo', 'Ax']
    """
    check_number("fraction", fraction, 0, 1)
    entities = set(entities)
    by_id = {p["id"]: p for p in passages}
    questions_of = {}
    for question in questions:
        questions_of.setdefault(question["passage_id"], []).append(question)
    donor_of = _rotations(passages, questions_of, entities, fraction, np.random.RandomState(seed))
    new_passages, new_questions = [], []
    for passage in passages:
        if passage["id"] not in donor_of:
            new_passages.append(passage)
            if passage["title"] in entities:
                new_questions.extend(questions_of.get(passage["id"], []))
            continue
        donor = by_id[donor_of[passage["id"]]]
        old, new = donor["title"], passage["title"]
        new_passages.append(dict(passage, text=_rename(donor["text"], old, new)))
        for question in questions_of.get(donor["id"], []):
            new_questions.append(
                dict(
                    question,
                    question=_rename(question["question"], old, new),
                    answer=_rename(question["answer"], old, new),
                    passage_id=passage["id"],
                    **({"country": new} if "country" in question else {}),
                )
            )
    return new_passages, new_questions


def _replace_last(text, old, new):
    """`text` with the last whole-word occurrence of `old` replaced by `new`."""
    matches = list(re.finditer(_as_word(old), text))
    if not matches:
        return text
    last = matches[-1]
    return text[: last.start()] + new + text[last.end():]


def _derangement(facts, rng, attempts=1000):
    """A permutation `p` of `range(len(facts))` with `facts[p[i]] != facts[i]`."""
    count = len(facts)
    for _ in range(attempts):
        order = rng.permutation(count)
        if all(facts[order[i]] != facts[i] for i in range(count)):
            return order
    raise ValueError(
        "Could not draw a permutation that changes every fact: too many "
        f"entities share one. Received: facts={sorted(facts)[:10]}"
    )


def derange_facts(passages, questions, entities, seed=0):
    """Gives every entity's passage another entity's fact (a derangement).

    A stress test of reading, for evaluation: each of the `entities`'
    passages that holds the answer of their `questions` (e.g. the capital
    passages of the held-out countries, with their capital questions) gets
    the answer of another of those passages in its place ("The capital of
    France is Paris." → "The capital of France is Lima."), drawn so that
    *every* answer changes (a random derangement; no entity keeps its own
    fact or one equal to it). Unlike `counterfactual_augment`, the entity
    names stay and only the answer span is replaced (its last occurrence, as
    the fact follows the name in "The capital of Singapore is Singapore."),
    so names inside facts ("Mexico City") need no special care. A model that
    reads its passages answers with the new facts; one that memorised them
    does not.

    Args:
        passages: list of dicts `{"id", "title", "text"}`; titles are the
            entity names.
        questions: list of dicts with `"question"`, `"answer"` and
            `"passage_id"`: the questions whose answers are swapped. All
            questions of one passage must share one answer, found in the
            passage's text.
        entities: names (passage titles) whose passages change; at least two.
        seed: int.

    Returns:
        A tuple `(passages, questions)`: all passages in the same order with
        the same ids (those of `entities` changed), and the questions of the
        changed passages with their new `"answer"` and the true one as
        `"original_answer"`.

    Example:

    >>> passages = [
    ...     {"id": "a/capital", "title": "Aland", "text": "The capital of Aland is Ax."},
    ...     {"id": "b/capital", "title": "Boland", "text": "The capital of Boland is Bo."},
    ... ]
    >>> questions = [
    ...     {"question": "What is the capital of Aland?", "answer": "Ax", "passage_id": "a/capital"},
    ...     {"question": "What is the capital of Boland?", "answer": "Bo", "passage_id": "b/capital"},
    ... ]
    >>> new_passages, new_questions = derange_facts(passages, questions, ["Aland", "Boland"])
    >>> [p["text"] for p in new_passages]
    ['The capital of Aland is Bo.', 'The capital of Boland is Ax.']
    >>> [(q["answer"], q["original_answer"]) for q in new_questions]
    [('Bo', 'Ax'), ('Ax', 'Bo')]
    """
    entities = set(entities)
    questions_of = {}
    for question in questions:
        questions_of.setdefault(question["passage_id"], []).append(question)
    chosen = [p for p in passages if p["title"] in entities and p["id"] in questions_of]
    facts = []
    for passage in chosen:
        answers = {q["answer"] for q in questions_of[passage["id"]]}
        if len(answers) != 1 or re.search(_as_word(next(iter(answers))), passage["text"]) is None:
            raise ValueError(
                "The questions of each changed passage must share one answer that its "
                f"text contains. Received: passage={passage!r}, answers={sorted(answers)}"
            )
        facts.append(answers.pop())
    if len(chosen) < 2:
        raise ValueError(
            "Deranging facts needs at least two passages of `entities` with questions. "
            f"Received: {len(chosen)} such passages"
        )
    order = _derangement(facts, np.random.RandomState(seed))
    new_text, new_questions = {}, []
    for i, passage in enumerate(chosen):
        old, new = facts[i], facts[order[i]]
        new_text[passage["id"]] = _replace_last(passage["text"], old, new)
        for question in questions_of[passage["id"]]:
            new_questions.append(dict(question, answer=new, original_answer=old))
    new_passages = [
        dict(p, text=new_text[p["id"]]) if p["id"] in new_text else p for p in passages
    ]
    return new_passages, new_questions
