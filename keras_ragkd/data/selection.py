"""Argument checks shared by the embedded knowledge bases (countries, elements)."""


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
