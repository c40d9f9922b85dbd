"""On-policy distillation batches (GKD's λ) between tiny llama RAG models."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_ragkd.data.countries import country_passages
from keras_ragkd.distillation import Distiller
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.distillation.on_policy import OnPolicyBatches
from keras_ragkd.distillation.on_policy import on_policy_schedule
from keras_ragkd.models import ByteLevelLlama3Tokenizer
from keras_ragkd.rag import CausalLMRagPreprocessor
from keras_ragkd.rag import build_causal_lm_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex

COUNTRIES = ["France", "Germany", "Peru", "Japan"]
QUESTIONS = [f"What is the capital of {c}?" for c in COUNTRIES]
ANSWERS = ["Paris", "Berlin", "Lima", "Tokyo"]


def _byte_level_alphabet():
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        chars[b] = chr(b) if b in printable else chr(256 + (extra := extra + 1) - 1)
    return [chars[b] for b in range(256)]


@pytest.fixture(scope="module")
def preprocessor():
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + _byte_level_alphabet()
    tokens += ["Ġt", "he", "Ġthe"]
    tokenizer = ByteLevelLlama3Tokenizer(
        {token: i for i, token in enumerate(tokens)}, merges=["Ġ t", "h e", "Ġt he"],
        misc_special_tokens={"<|endoftext|>"}, pad_token="<|endoftext|>",
    )
    return CausalLMRagPreprocessor(tokenizer, question_length=40, passage_length=40,
                                   answer_length=8, query_as_text=False)


def rag_model(preprocessor, hidden_dim, seed):
    keras.utils.set_random_seed(seed)
    vocabulary_size = preprocessor.vocabulary_size
    encoder = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocabulary_size, 16, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])
    passages = [p for p in country_passages(COUNTRIES) if p["id"].endswith("/capital")]
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=vocabulary_size, num_layers=1, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim,
        tie_word_embeddings=True,
    )
    return build_causal_lm_rag_question_answerer(index, encoder, preprocessor, backbone,
                                                 num_docs=2, doc_score_scale=5.0)


@pytest.fixture(scope="module")
def teacher(preprocessor):
    """A wider random RAG model: any model on the student's inputs can score."""
    return rag_model(preprocessor, hidden_dim=32, seed=0)


def test_schedule_honours_the_fraction():
    for fraction in (0.0, 0.1, 0.25, 0.5, 1 / 3, 0.9, 1.0):
        for n in (1, 7, 12, 40):
            schedule = on_policy_schedule(n, fraction)
            assert len(schedule) == n
            assert sum(schedule) == int(np.floor(n * fraction + 0.5))
            # Every prefix holds its share to within one batch.
            counts = np.cumsum(schedule)
            assert np.all(np.abs(counts - fraction * np.arange(1, n + 1)) <= 1)
    with pytest.raises(ValueError, match="Received: fraction=1.5"):
        on_policy_schedule(4, 1.5)


def test_on_policy_batches_carry_the_students_answers_scored_by_the_teacher(
        preprocessor, teacher):
    student = rag_model(preprocessor, hidden_dim=16, seed=1)
    batches = OnPolicyBatches(student, teacher, QUESTIONS, ANSWERS, fraction=0.5,
                              batch_size=2)
    assert len(batches) == 2 and [batches.is_on_policy(i) for i in range(2)] == [True, False]
    x, y = batches[0]
    sampled = student.generate(QUESTIONS[:2])
    expected, _ = preprocessor(np.asarray(QUESTIONS[:2]), np.asarray(sampled))
    np.testing.assert_array_equal(x["decoder_token_ids"], expected["decoder_token_ids"])
    np.testing.assert_allclose(y["teacher_logits"], teacher(expected).numpy(), atol=1e-5)
    # Labels: the teacher's choice after each of the student's prefixes.
    padding = preprocessor.padding_id
    _, labels = preprocessor(np.asarray(QUESTIONS[:2]), np.asarray(sampled))
    kept = labels.numpy() != padding
    np.testing.assert_array_equal(y["labels"][kept], y["teacher_logits"].argmax(-1)[kept])
    assert np.all(y["labels"][~kept] == padding)
    # Off-policy batches: the reference answers.
    x, y = batches[1]
    reference, labels = preprocessor(np.asarray(QUESTIONS[2:]), np.asarray(ANSWERS[2:]))
    np.testing.assert_array_equal(y["labels"], labels.numpy())
    np.testing.assert_array_equal(x["decoder_token_ids"], reference["decoder_token_ids"])


def test_distiller_fits_on_policy_batches_and_the_fraction_holds(preprocessor, teacher):
    student = rag_model(preprocessor, hidden_dim=16, seed=2)
    batches = OnPolicyBatches(student, teacher, QUESTIONS * 2, ANSWERS * 2, fraction=0.25,
                              batch_size=2, shuffle_seed=0)
    distiller = Distiller(None, student, alpha=0.1, temperature=1.0,
                          ignore_class=preprocessor.padding_id)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True, ignore_class=preprocessor.padding_id))
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(batches, epochs=3, verbose=0)
    losses = history.history["student_loss"]
    assert np.all(np.isfinite(history.history["distillation_loss"]))
    # On-policy labels follow the student's own samples, so its hard loss need
    # not fall from epoch to epoch; it trains and stays finite.
    assert np.all(np.isfinite(losses))
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    assert len(losses) == 3 and len(batches) == 4
    assert [batches.is_on_policy(i) for i in range(4)] == [False, True, False, False]
    # Every build of batch 1, and only of batch 1, answered with the student's
    # outputs; each epoch built it (Keras also builds the first batches once
    # before training, to read their structure).
    assert all(on == (index == 1) for index, on in batches.built)
    trained = batches.built[-12:]
    assert sorted(index for index, _ in trained) == sorted(list(range(4)) * 3)
    assert sum(on for _, on in trained) == 3


def test_off_policy_batches_from_a_top_k_cache_mix_with_on_policy_ones(
        preprocessor, teacher, tmp_path):
    student = rag_model(preprocessor, hidden_dim=16, seed=3)
    dataset = student.preprocess(QUESTIONS, ANSWERS, batch_size=2, shuffle=False).cache()
    cache = TeacherCache.build(teacher, dataset, tmp_path / "cache", top_k=8,
                               temperature=2.0, verbose=0)
    batches = OnPolicyBatches(student, teacher, QUESTIONS, ANSWERS, fraction=0.5,
                              batch_size=2, off_policy=cache.attach(dataset),
                              top_k=8, temperature=2.0)
    on_x, on_y = batches[0]
    off_x, off_y = batches[1]
    assert sorted(on_y) == sorted(off_y) and sorted(on_x) == sorted(off_x)
    assert all(np.asarray(on_y[key]).dtype == np.asarray(off_y[key]).dtype for key in off_y)
    assert np.shape(on_y["teacher_top_indices"]) == np.shape(off_y["teacher_top_indices"])
    # The off-policy batch is the cache's first batch as it is.
    _, cached = next(cache.attach(dataset).as_numpy_iterator())
    np.testing.assert_array_equal(off_y["teacher_top_logits"], cached["teacher_top_logits"])
    distiller = Distiller(None, student, alpha=0.1, temperature=2.0,
                          ignore_class=preprocessor.padding_id)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True, ignore_class=preprocessor.padding_id))
    history = distiller.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["distillation_loss"][0])
    with pytest.raises(ValueError, match="Received: top_k=8, temperature=None"):
        OnPolicyBatches(student, teacher, QUESTIONS, ANSWERS, 0.5, 2, top_k=8)
