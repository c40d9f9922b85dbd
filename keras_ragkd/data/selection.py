"""What the embedded knowledge bases (countries, elements) share: argument
checks and the layout of their passages."""


def check_question_types(types, templates):
    """The question types asked for, as a set; `None` means all of `templates`.

    Args:
        types: `None` or an iterable of type names.
        templates: dict of the knowledge base's templates by type.

    Example:

    >>> sorted(check_question_types(["capital"], {"capital": [], "region": []}))
    ['capital']
    """
    if types is None:
        return set(templates)
    if isinstance(types, str):
        raise TypeError(
            "`types` must be an iterable of question types, not a single string. "
            f"Received: types={types!r}"
        )
    types = set(types)
    unknown = types - set(templates)
    if unknown:
        raise ValueError(
            f"Unknown question types; expected a subset of "
            f"{sorted(templates)}. Received: types={sorted(unknown)}"
        )
    return types


def check_wording(wording, wordings):
    """Refuses a `wording` that is not a key of `wordings` (`{name: templates}`).

    Example:

    >>> check_wording("reworded", {"training": {}, "reworded": {}})
    >>> check_wording("formal", {"training": {}, "reworded": {}})
    Traceback (most recent call last):
    ...
    ValueError: `wording` must be one of ('training', 'reworded'). Received: wording='formal'
    """
    if wording not in wordings:
        raise ValueError(
            f"`wording` must be one of {tuple(wordings)}. Received: wording={wording!r}"
        )


def record_passages(record, texts):
    """The passages `{"id", "title", "text"}` of one record, one a non-empty text.

    Args:
        record: a knowledge-base record with `"slug"` and `"name"`.
        texts: `{group: text}`; a passage's id is `"<slug>/<group>"`.

    Example:

    >>> record_passages({"slug": "gold", "name": "Gold"}, {"identity": "Au.", "mass": ""})
    [{'id': 'gold/identity', 'title': 'Gold', 'text': 'Au.'}]
    """
    return [
        {"id": f"{record['slug']}/{group}", "title": record["name"], "text": text}
        for group, text in texts.items()
        if text
    ]


def select_records(records, names, argument, noun, hint):
    """The records whose `"name"` is in `names` (all of them for `None`), in order.

    Args:
        records: the knowledge base's records.
        names: `None` or an iterable of names.
        argument: the caller's argument name, for errors (e.g. `"countries"`).
        noun: what a record is, for errors (e.g. `"country"`).
        hint: where the valid names are listed, for errors.

    Example:

    >>> records = [{"name": "Gold"}, {"name": "Iron"}]
    >>> select_records(records, ["Iron"], "elements", "element", "the records")
    [{'name': 'Iron'}]
    """
    if names is None:
        return records
    if isinstance(names, str):
        raise TypeError(
            f"`{argument}` must be an iterable of {noun} names, not a single string. "
            f"Received: {argument}={names!r}"
        )
    wanted = set(names)
    missing = wanted - {record["name"] for record in records}
    if missing:
        raise ValueError(
            f"Unknown {noun} names; see {hint} for the list. "
            f"Received: {argument}={sorted(missing)}"
        )
    return [record for record in records if record["name"] in wanted]
