import keras_ragkd


def test_subpackages_are_attributes_of_the_package():
    for name in ("data", "distillation", "models", "rag", "retrieval", "serving", "text"):
        assert hasattr(keras_ragkd, name), name
    assert callable(keras_ragkd.serving.export_model)
    assert callable(keras_ragkd.models.load_smollm2)
    assert keras_ragkd.RagQuestionAnswerer is keras_ragkd.rag.RagQuestionAnswerer
