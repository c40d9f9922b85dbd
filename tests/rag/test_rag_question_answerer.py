import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.distillation import Distiller
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import RagQuestionAnswerer
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.models import load_minilm_tokenizer
from tests.rag.conftest import token_query_encoder

FRANCE = "What is the capital of France?"


@pytest.mark.slow
def test_fit_on_countryinfo_lowers_the_loss(trained):
    _, history, _, _ = trained
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("num_beams, marginalization", [(1, "token"), (2, "sequence")])
def test_generate_returns_strings(trained, num_beams, marginalization):
    _, _, _, evaluator = trained
    answers = evaluator.generate(
        [FRANCE, "What is the currency of Japan?"],
        num_beams=num_beams,
        marginalization=marginalization,
    )
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
def test_retrieve_returns_passages_with_probabilities(trained):
    _, _, _, evaluator = trained
    (results,) = evaluator.retrieve([FRANCE])
    assert len(results) == 2
    assert results[0]["id"] == "france/capital"
    assert results[0]["text"] == "The capital of France is Paris."
    assert sum(r["probability"] for r in results) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_with_index_reads_another_number_of_passages(trained, tmp_path):
    _, _, _, evaluator = trained
    index = evaluator.rag.retriever.index
    wider = evaluator.with_index(index, num_docs=3)
    assert wider.rag.num_docs == 3 and wider.rag.retriever.k == 3
    assert wider.rag.generator is evaluator.rag.generator
    np.testing.assert_allclose(
        wider.rag.doc_score_scale.numpy(), evaluator.rag.doc_score_scale.numpy()
    )
    assert len(wider.retrieve([FRANCE])[0]) == 3
    (narrow,) = evaluator.with_index(index, num_docs=1).retrieve([FRANCE])
    assert [r["id"] for r in narrow] == ["france/capital"]
    assert narrow[0]["probability"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Received: num_docs=0"):
        evaluator.with_index(index, num_docs=0)
    # A teacher read through a student's single passage feeds a cache.
    data = evaluator.preprocess([FRANCE, "What is the currency of Japan?"], ["Paris", "JPY"])
    cache = TeacherCache.build(
        evaluator.with_index(index, num_docs=1), data, str(tmp_path / "cache"), top_k=4,
        temperature=1.0, verbose=0,
    )
    assert cache.count == 2


@pytest.mark.slow
def test_hot_swapping_the_index_changes_the_answer(kb, trained, encoder):
    passages, _ = kb
    model, _, _, evaluator = trained
    swapped = [
        dict(p, text="The capital of France is Berlin.") if p["id"] == "france/capital" else p
        for p in passages
    ]
    swapped_index = PassageIndex.build(swapped, encoder, verbose=0)
    (before,) = evaluator.generate([FRANCE])
    (after,) = model.with_index(swapped_index).generate([FRANCE])
    assert before == "paris"
    assert after == "berlin"


@pytest.mark.slow
def test_keras_file_round_trip(trained, tmp_path):
    model, _, index, _ = trained
    index.save(str(tmp_path / "index"))
    path = str(tmp_path / "rag.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, RagQuestionAnswerer)
    x = next(iter(model.preprocess([FRANCE, "What is the currency of Japan?"], ["Paris", "JPY"])))[0]
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-5)
    assert restored.rag.retriever.index.directory == str(tmp_path / "index")
    np.testing.assert_allclose(
        restored.rag.doc_score_scale.numpy(), model.rag.doc_score_scale.numpy()
    )
    # The frozen query encoder stays frozen, so the optimizer state fits and
    # training continues where it stopped.
    assert len(restored.trainable_variables) == len(model.trainable_variables)
    assert restored.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()


@pytest.mark.slow
def test_rag_to_rag_distillation_through_distiller(kb, trained, encoder):
    passages, questions = kb
    teacher, _, index, _ = trained
    student = build_rag_question_answerer(
        index,
        encoder,
        teacher.preprocessor,
        generator={"hidden_dim": 12, "num_heads": 2, "intermediate_dim": 12,
                   "num_encoder_layers": 1, "num_decoder_layers": 1},
        num_docs=1,
    )
    assert student.rag.generator.count_params() * 4 <= teacher.rag.generator.count_params()
    distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0, ignore_class=0)
    distiller.compile(
        optimizer=keras.optimizers.Adam(5e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    # The same raw strings as the student's own `fit`.
    logs = distiller.fit(
        [q["question"] for q in questions], [q["answer"] for q in questions],
        batch_size=16, epochs=2, verbose=0,
    ).history
    assert logs["distillation_loss"][-1] < logs["distillation_loss"][0]
    assert logs["student_loss"][-1] < logs["student_loss"][0]
    assert teacher.rag.generator.trainable is False


@pytest.mark.slow
def test_jit_compile_with_tensor_backend(kb, token_preprocessor):
    passages, questions = kb
    encoder = token_query_encoder(token_preprocessor.vocabulary_size)
    passage_ids = token_preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    keras.utils.set_random_seed(0)
    model = build_rag_question_answerer(
        index, encoder, token_preprocessor, generator="tiny", num_docs=2, backend="tensor"
    )
    assert model.rag.retriever.supports_jit
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    before = [w.numpy() for w in model.rag.generator.trainable_weights]
    # 32 questions, batches of 16: one XLA compilation.
    history = model.fit(
        [q["question"] for q in questions[:32]], [q["answer"] for q in questions[:32]],
        batch_size=16, epochs=1, verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for w in model.rag.generator.trainable_weights]
    assert any(not np.allclose(b, a) for b, a in zip(before, after))


@pytest.mark.slow
def test_model_rejects_bad_inputs(trained):
    model, _, _, _ = trained
    with pytest.raises(TypeError, match="Received: questions="):
        model.generate([1, 2])
    with pytest.raises(ValueError, match="Received: len\\(questions\\)=1"):
        model.preprocess(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="does not preprocess.*Received: inputs="):
        model(["What is the capital of France?"])


@pytest.mark.slow
def test_predict_on_raw_strings_matches_a_call_on_preprocessed_inputs(trained):
    model, _, _, _ = trained
    questions = ["What is the capital of France?", "What is the currency of Japan?"]
    predicted = model.predict(questions, verbose=0)
    called = model(model.preprocess_samples(tf.constant(questions)), training=False)
    np.testing.assert_allclose(predicted, keras.ops.convert_to_numpy(called), rtol=1e-5, atol=1e-6)


ELEMENTS = ["Hydrogen", "Helium", "Carbon", "Nitrogen", "Oxygen", "Einsteinium", "Fermium"]


@pytest.mark.slow
def test_hybrid_retrieval_finds_numbers_and_survives_save_swap_and_export(encoder, tmp_path):
    from keras_ragkd.data import element_passages
    from keras_ragkd.retrieval import HybridQueryEncoder, HybridRetriever

    index = PassageIndex.build(element_passages(ELEMENTS), encoder, verbose=0)
    index.save(str(tmp_path / "index"))
    question = ["Which element has atomic number 6?"]
    dense = build_rag_question_answerer(index, generator="tiny", num_docs=2)
    hybrid = build_rag_question_answerer(index, generator="tiny", num_docs=2, lexical_weight=0.5)
    assert isinstance(hybrid.rag.query_encoder, HybridQueryEncoder)
    assert hybrid.rag.query_encoder.dense_encoder is encoder  # the index's own, frozen
    assert not encoder.trainable
    # MiniLM alone ranks Einsteinium (element 99) first; the word "6" finds Carbon.
    assert dense.retrieve(question)[0][0]["id"] != "carbon/identity"
    assert hybrid.retrieve(question)[0][0]["id"] == "carbon/identity"

    hybrid.save_to_preset(str(tmp_path / "model"))
    restored = RagQuestionAnswerer.from_preset(str(tmp_path / "model"))
    assert isinstance(restored.rag.retriever, HybridRetriever)
    assert restored.retrieve(question) == hybrid.retrieve(question)
    assert restored.generate(question) == hybrid.generate(question)

    # Another knowledge base: a TF-IDF vocabulary of its own passages, same fusion.
    metals = PassageIndex.build(element_passages(["Gold", "Silver", "Tin"]), encoder, verbose=0)
    swapped = hybrid.with_index(metals)
    assert isinstance(swapped.rag.retriever, HybridRetriever)
    assert float(swapped.rag.retriever.lexical_weight.numpy()) == 0.5
    assert swapped.retrieve(["Which element has the symbol Sn?"])[0][0]["id"] == "tin/identity"

    hybrid.export(str(tmp_path / "saved_model"))
    graph = (tmp_path / "saved_model" / "saved_model.pb").read_bytes()
    assert b"PyFunc" not in graph
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))  # kept: it owns the variables
    served = loaded.serve(tf.constant(question))
    assert [a.decode() for a in served["answers"].numpy()] == hybrid.generate(question)
    assert [i.decode() for i in served["passage_ids"].numpy()[0]] == [
        p["id"] for p in hybrid.retrieve(question)[0]
    ]


def test_hybrid_retrieval_refuses_a_trained_query_encoder(kb, encoder):
    index = PassageIndex.build(kb[0][:4], encoder, verbose=0)
    with pytest.raises(ValueError, match="train_query_encoder=True"):
        build_rag_question_answerer(index, generator="tiny", lexical_weight=0.5,
                                    train_query_encoder=True)


def test_an_index_without_an_encoder_needs_a_query_encoder(kb):
    index = PassageIndex.from_embeddings(kb[0][:2], np.eye(2, 4, dtype="float32"))
    with pytest.raises(ValueError, match="Received: query_encoder=None"):
        build_rag_question_answerer(index, generator="tiny")
