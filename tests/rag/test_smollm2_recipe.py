"""The SmolLM2 RAG teacher/student recipe shared by the LLM demo and benchmarks."""

import pytest

from keras_ragkd.rag import smollm2_recipe


def test_the_student_is_an_eighth_of_smollm2():
    from keras_ragkd.models import load_smollm2
    from keras_ragkd.models.llama_student import build_llama_student

    teacher = load_smollm2(sequence_length=64).backbone
    settings = {k: v for k, v in smollm2_recipe.STUDENT.items()
                if k != "num_docs" and not k.startswith("copy_")}
    student = build_llama_student(teacher, **settings)
    copy_head = smollm2_recipe.student_copy_head()
    copy_head.build([None, None, student.hidden_dim])
    assert student.count_params() + copy_head.count_params() <= teacher.count_params() / 8
    assert student.token_embedding.input_dim == teacher.token_embedding.input_dim


def test_unknown_student_or_distillation_settings_are_errors():
    with pytest.raises(ValueError, match=r"Received: overrides=\['hidden_dims'\]"):
        smollm2_recipe.build_smollm2_rag_student(None, None, None, hidden_dims=128)
    with pytest.raises(ValueError, match=r"Received: settings=\['beta'\]"):
        smollm2_recipe.compile_student_distiller(None, 10, beta=0.5)


def test_cache_batches_need_one_full_batch():
    questions = [{"question": "q?", "answer": "a"}] * 3
    with pytest.raises(ValueError, match="at least one batch of 4"):
        smollm2_recipe.cache_batches(None, questions, batch_size=4)
