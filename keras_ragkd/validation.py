"""Argument checks shared by the whole package, with the project's error style.

Each check returns the value in its canonical type or raises a `ValueError`
that says what was expected and ends with `Received: name=value`. Booleans are
never numbers here (`True` is not a count of 1). This module imports nothing
else of `keras_ragkd`.
"""

import math
import numbers


def is_integer(value, minimum=1):
    """Whether `value` is an integer (Python or NumPy, not a bool) `>= minimum`.

    The test `check_integer` applies, for code that collects problems
    rather than raising at the first.

    Example:

    >>> is_integer(3), is_integer(0), is_integer(0, minimum=0), is_integer(True)
    (True, False, True, False)
    """
    return (
        not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum
    )


def check_integer(name, value, minimum=1):
    """`value` as an `int`, if it is an integer of at least `minimum`.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed (Python or NumPy integers).
        minimum: the smallest value accepted.

    Returns:
        `int(value)`.

    Example:

    >>> check_integer("k", 5)
    5
    >>> check_integer("k", 0)
    Traceback (most recent call last):
    ...
    ValueError: `k` must be a positive integer. Received: k=0
    >>> check_integer("length", 1, minimum=2)
    Traceback (most recent call last):
    ...
    ValueError: `length` must be an integer >= 2. Received: length=1
    """
    if not is_integer(value, minimum):
        if minimum == 1:
            expected = "a positive integer"
        elif minimum == 0:
            expected = "a non-negative integer"
        else:
            expected = f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_number(name, value, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """`value` as a `float`, if it is a finite real number within the bounds.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        low: optional lower bound.
        high: optional upper bound.
        low_inclusive: whether `low` itself is accepted.
        high_inclusive: whether `high` itself is accepted.

    Returns:
        `float(value)`.

    Example:

    >>> check_number("alpha", 0.5, 0, 1)
    0.5
    >>> check_number("temperature", 0.0, low=0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a finite number > 0. Received: temperature=0.0
    >>> check_number("alpha", float("nan"), 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: `alpha` must be a finite number in [0, 1]. Received: alpha=nan
    """
    in_bounds = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (low is None or (value >= low if low_inclusive else value > low))
        and (high is None or (value <= high if high_inclusive else value < high))
    )
    if not in_bounds:
        raise ValueError(
            f"`{name}` must be a finite number{_bounds(low, high, low_inclusive, high_inclusive)}."
            f" Received: {name}={value!r}"
        )
    return float(value)


def _bounds(low, high, low_inclusive, high_inclusive):
    if low is not None and high is not None:
        return f" in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f" {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f" {'<=' if high_inclusive else '<'} {high}"
    return ""
