import numpy as np
import pytest

from keras_ragkd.validation import check_integer
from keras_ragkd.validation import check_number
from keras_ragkd.validation import is_integer


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 0, -2])
def test_check_integer_refuses_what_is_not_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"`k` must be a positive integer\. Received: k="):
        check_integer("k", value)


def test_check_integer_accepts_numpy_integers_and_returns_int():
    value = check_integer("k", np.int64(3))
    assert value == 3 and type(value) is int
    assert check_integer("count", 0, minimum=0) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.5", -0.1, 1.5])
def test_check_number_refuses_values_outside_the_interval(value):
    with pytest.raises(ValueError, match=r"in \[0, 1\]\. Received: alpha="):
        check_number("alpha", value, 0, 1)


def test_check_number_open_bounds():
    assert check_number("t", 1e-9, low=0, low_inclusive=False) == 1e-9
    with pytest.raises(ValueError, match=r"must be a finite number < 1\. Received: p=1"):
        check_number("p", 1, high=1, high_inclusive=False)


def test_is_integer_is_the_test_check_integer_applies():
    assert is_integer(np.int64(2)) and is_integer(0, minimum=0)
    assert not any(is_integer(v) for v in (True, 2.0, "2", None, 0, -1))
