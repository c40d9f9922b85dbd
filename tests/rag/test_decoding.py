import numpy as np
import tensorflow as tf

from keras_ragkd.rag.decoding import beam_search


def _bigram_model(table):
    table = tf.constant(np.log(table).astype("float32"))

    def next_log_probs(ids, position):
        return tf.gather(table, ids[:, position])

    return next_log_probs


def test_greedy_follows_argmax_and_pads_after_end():
    # Tokens: 0 pad, 1 start, 2 a, 3 b, 4 end.
    table = np.full((5, 5), 0.01)
    table[1, 2] = table[2, 3] = table[3, 4] = 0.96
    ids, scores = beam_search(_bigram_model(table), 2, 5, start_id=1, end_id=4, max_length=5)
    assert ids.shape == (2, 1, 5)
    assert ids.numpy()[0, 0].tolist() == [2, 3, 4, 0, 0]
    np.testing.assert_allclose(scores.numpy()[:, 0], 3 * np.log(0.96), rtol=1e-5)


def test_beam_search_finds_better_sequence_than_greedy():
    # Greedy takes 2 (0.6) then is stuck with 0.3; beam takes 3 (0.4) then 1.0.
    table = np.full((5, 5), 1e-6)
    table[1, 2], table[1, 3] = 0.6, 0.4
    table[2, 4] = table[2, 2] = table[2, 3] = 0.3
    table[3, 4] = 1.0
    table /= table.sum(-1, keepdims=True)
    step = _bigram_model(table)
    greedy, greedy_score = beam_search(step, 1, 5, 1, 4, max_length=2, num_beams=1)
    beams, beam_scores = beam_search(step, 1, 5, 1, 4, max_length=2, num_beams=3)
    assert greedy.numpy()[0, 0, 0] == 2
    assert beams.numpy()[0, 0].tolist() == [3, 4]
    assert beam_scores.numpy()[0, 0] > greedy_score.numpy()[0, 0]
    assert np.all(np.diff(beam_scores.numpy()[0]) <= 0)


def test_stops_calling_the_model_once_every_beam_has_ended():
    table = np.full((5, 5), 0.01)
    table[1, 4] = 0.96  # Every sequence ends at the first step.
    step = _bigram_model(table)
    calls = tf.Variable(0)

    def counted(ids, position):
        calls.assign_add(1)
        return step(ids, position)

    ids, _ = tf.function(
        lambda: beam_search(counted, 2, 5, start_id=1, end_id=4, max_length=6, num_beams=2)
    )()
    assert ids.numpy()[0, 0].tolist() == [4, 0, 0, 0, 0, 0]
    assert int(calls.numpy()) == 1
