"""The small llama student: the teacher's vocabulary, its embedding projected."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_ragkd.models.llama_student import build_llama_student
from keras_ragkd.models.llama_student import project_embedding

# SmolLM2-135M-Instruct: 49,152 tokens, 134,515,008 weights (issue 17).
SMOLLM2_VOCABULARY = 49152
SMOLLM2_PARAMETERS = 134_515_008


def tiny_teacher(vocabulary_size=96, hidden_dim=24, seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.Llama3Backbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=hidden_dim, intermediate_dim=32,
        rope_max_wavelength=100000, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )


def test_student_shares_the_vocabulary_and_positions_and_is_smaller():
    teacher = tiny_teacher()
    student = build_llama_student(teacher, hidden_dim=8, num_layers=1, num_query_heads=2,
                                  num_key_value_heads=1)
    assert isinstance(student, keras_hub.models.Llama3Backbone)
    assert student.vocabulary_size == teacher.vocabulary_size
    assert student.rope_max_wavelength == 100000 and student.layer_norm_epsilon == 1e-5
    assert student.tie_word_embeddings and student.intermediate_dim == 32
    assert student.count_params() < teacher.count_params()
    ids = np.array([[5, 6, 7]], "int32")
    hidden = student({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert student.token_embedding(hidden, reverse=True).shape == (1, 3, 96)


def test_projected_embedding_is_the_teachers_best_low_rank_geometry():
    teacher = tiny_teacher()
    student = build_llama_student(teacher, hidden_dim=8, num_layers=1, num_query_heads=2,
                                  num_key_value_heads=1)
    embedding = teacher.token_embedding.embeddings.numpy().astype("float64")
    projected = student.token_embedding.embeddings.numpy()
    # Its Gram matrix is the rank-8 truncated SVD of the teacher's (Eckart-Young).
    u, s, _ = np.linalg.svd(embedding, full_matrices=False)
    best = (u[:, :8] * s[:8] ** 2) @ u[:, :8].T
    np.testing.assert_allclose(projected @ projected.T, best, atol=1e-5)
    random = build_llama_student(teacher, hidden_dim=8, num_layers=1, num_query_heads=2,
                                 num_key_value_heads=1, embedding_init="random")
    assert not np.allclose(random.token_embedding.embeddings.numpy(), projected)
    # The transformer layers start from the seed either way.
    np.testing.assert_array_equal(random.transformer_layers[0].get_weights()[0],
                                  student.transformer_layers[0].get_weights()[0])


def test_default_student_of_smollm2_is_under_an_eighth_of_its_parameters():
    # The real vocabulary; a narrow stand-in teacher (random init needs no
    # projection), so no 135M model is loaded.
    teacher = tiny_teacher(vocabulary_size=SMOLLM2_VOCABULARY, hidden_dim=8)
    student = build_llama_student(teacher, embedding_init="random")
    parameters = student.count_params()  # Embeddings included (tied: counted once).
    assert parameters * 8 <= SMOLLM2_PARAMETERS
    assert parameters == sum(int(np.prod(w.shape)) for w in student.weights)
    assert student.hidden_dim == 128 and student.num_layers == 6


def test_invalid_arguments_are_refused():
    teacher = tiny_teacher()
    with pytest.raises(ValueError, match="Received: embedding_init='pca'"):
        build_llama_student(teacher, embedding_init="pca")
    with pytest.raises(ValueError, match="Received: hidden_dim=10"):
        build_llama_student(teacher, hidden_dim=10, num_query_heads=4)
    with pytest.raises(ValueError, match="Received: hidden_dim=32"):
        build_llama_student(teacher, hidden_dim=32, num_query_heads=4)
    with pytest.raises(ValueError, match="token_embedding"):
        build_llama_student(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="Received: hidden_dim=0"):
        project_embedding(np.ones((4, 3)), 0)


def randomised_norms(teacher, seed=1):
    rng = np.random.default_rng(seed)
    for layer in teacher.transformer_layers:
        for norm in (layer._self_attention_layernorm, layer._feedforward_layernorm):
            norm.scale.assign(rng.uniform(0.5, 1.5, norm.scale.shape).astype("float32"))
    return teacher


def logits(backbone, ids):
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))


def test_teacher_layers_at_full_width_compute_the_teachers_function():
    teacher = randomised_norms(tiny_teacher())
    student = build_llama_student(teacher, hidden_dim=24, num_layers=2, num_query_heads=2,
                                  num_key_value_heads=1, intermediate_dim=32,
                                  layer_init="teacher", teacher_layers=[0, 1])
    ids = np.random.default_rng(0).integers(1, 96, size=(2, 7)).astype("int32")
    np.testing.assert_allclose(logits(student, ids), logits(teacher, ids), atol=2e-4)


@pytest.mark.parametrize("shapes, name", [
    (dict(hidden_dim=16, num_query_heads=4), "hidden_dim // num_query_heads"),
    (dict(num_layers=3), "num_layers"),
    (dict(intermediate_dim=64), "intermediate_dim"),
    (dict(num_key_value_heads=2), "num_key_value_heads"),
])
def test_teacher_layers_refuse_shapes_the_teacher_cannot_give(shapes, name):
    arguments = dict(dict(hidden_dim=12, num_layers=1, num_query_heads=1,
                          num_key_value_heads=1, intermediate_dim=16), **shapes)
    with pytest.raises(ValueError, match=f"Received: {name}="):
        build_llama_student(tiny_teacher(), layer_init="teacher", **arguments)


def test_teacher_layers_need_the_projected_embedding_and_a_known_init():
    for arguments in (dict(layer_init="teacher", embedding_init="random"),
                      dict(layer_init="pretrained")):
        with pytest.raises(ValueError, match="Received: layer_init="):
            build_llama_student(tiny_teacher(), hidden_dim=12, num_layers=1,
                                num_query_heads=1, num_key_value_heads=1, **arguments)
