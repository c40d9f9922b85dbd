"""Copy continuation shared by the copy generator and the causal-LM copy head."""

import numpy as np
import tensorflow as tf

from keras_ragkd.rag.copy_continuation import continue_copy
from keras_ragkd.rag.copy_continuation import copy_with_continuation
from keras_ragkd.rag.copy_continuation import source_matches


def test_source_matches_respect_the_copy_mask():
    matches = source_matches(np.array([[7, 9]]), np.array([[7, 5, 7, 9]]),
                             np.array([[True, True, False, True]])).numpy()
    np.testing.assert_array_equal(matches, [[[1, 0, 0, 0], [0, 0, 0, 1]]])


def test_the_scan_equals_steps_of_continue_copy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 4, 6)).astype("float32")
    source = rng.integers(0, 3, size=(2, 6))
    inputs = rng.integers(0, 3, size=(2, 4))
    matches = source_matches(inputs, source, np.ones((2, 6), bool))
    probs, continuations = copy_with_continuation(scores, matches, 3.0)
    previous = tf.zeros((2, 6))
    for t in range(4):
        previous, continuation = continue_copy(previous, scores[:, t], matches[:, t], 3.0)
        np.testing.assert_allclose(probs[:, t], previous, rtol=1e-6)
        np.testing.assert_allclose(continuations[:, t], continuation, rtol=1e-6)
    np.testing.assert_array_equal(continuations[:, 0], 0.0)  # Nothing copied before step 0.


def test_a_copied_span_continues_where_it_was_copied_from():
    # Token 7 is at positions 0 and 3; step 0 copied position 3, so step 1
    # (input 7) continues at 4, not at 1.
    scores = np.zeros((1, 2, 6), "float32")
    scores[0, 0, 3] = 10.0
    source = np.array([[7, 5, 6, 7, 8, 9]])
    matches = source_matches(np.array([[0, 7]]), source, np.ones((1, 6), bool))
    probs, continuations = copy_with_continuation(scores, matches, 20.0)
    assert np.argmax(probs[0, 1]) == 4
    assert continuations.numpy()[0, 1, 4] > 0.99


def test_the_bonus_gets_a_gradient():
    bonus = tf.Variable(1.0)
    scores = np.zeros((1, 2, 3), "float32")
    scores[0, 0, 0] = 5.0
    matches = source_matches(np.array([[0, 4]]), np.array([[4, 5, 6]]), np.ones((1, 3), bool))
    with tf.GradientTape() as tape:
        probs, _ = copy_with_continuation(scores, matches, bonus)
        loss = -tf.math.log(probs[0, 1, 1])  # The continuation is the target.
    gradient = tape.gradient(loss, bonus)
    assert gradient is not None and float(gradient) < 0.0  # A larger bonus helps.


def test_coverage_in_the_scan_equals_steps_with_the_summed_attention():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 4, 6)).astype("float32")
    matches = source_matches(rng.integers(0, 3, size=(2, 4)), rng.integers(0, 3, size=(2, 6)),
                             np.ones((2, 6), bool))
    probs, _ = copy_with_continuation(scores, matches, 3.0, coverage_penalty=2.0)
    previous, coverage = tf.zeros((2, 6)), tf.zeros((2, 6))
    for t in range(4):
        previous, _ = continue_copy(previous, scores[:, t], matches[:, t], 3.0, coverage, 2.0)
        coverage += previous
        np.testing.assert_allclose(probs[:, t], previous, rtol=1e-6)
    unpenalised, _ = copy_with_continuation(scores, matches, 3.0)
    np.testing.assert_allclose(probs[:, 0], unpenalised[:, 0], rtol=1e-6)  # Nothing covered.


def test_coverage_moves_a_repeated_copy_on():
    scores = np.zeros((1, 2, 4), "float32")
    scores[0, :, 2] = 4.0  # The same position is the best at both steps.
    matches = np.zeros((1, 2, 4), "float32")
    probs, _ = copy_with_continuation(scores, matches, 0.0, coverage_penalty=10.0)
    assert np.argmax(probs[0, 0]) == 2 and np.argmax(probs[0, 1]) != 2
