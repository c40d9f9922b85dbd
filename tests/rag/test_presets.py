"""Relocatable model folders: copied anywhere, they load and answer the same."""

import json
import shutil

import pytest

from keras_ragkd.rag import RagQuestionAnswerer

QUESTIONS = ["What is the capital of France?", "What is the currency of Japan?"]


@pytest.mark.slow
def test_model_folder_loads_after_being_moved(trained, tmp_path):
    _, _, index, evaluator = trained
    evaluator.rag.retriever.index.save(str(tmp_path / "index"))
    evaluator.save_to_preset(str(tmp_path / "model"))
    shutil.copytree(tmp_path / "model", tmp_path / "elsewhere" / "model")
    shutil.rmtree(tmp_path / "model")
    shutil.rmtree(tmp_path / "index")
    config = (tmp_path / "elsewhere" / "model" / "config.json").read_text()
    assert str(tmp_path) not in config  # nothing in it is an absolute path
    restored = RagQuestionAnswerer.from_preset(str(tmp_path / "elsewhere" / "model"))
    assert restored.generate(QUESTIONS) == evaluator.generate(QUESTIONS)
    assert restored.retrieve(QUESTIONS) == evaluator.retrieve(QUESTIONS)
    assert restored.rag.retriever.index.directory.startswith(str(tmp_path / "elsewhere"))


@pytest.mark.slow
def test_model_folder_refuses_what_it_cannot_read(trained, tmp_path):
    _, _, _, evaluator = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Received: directory="):
        RagQuestionAnswerer.from_preset(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(ValueError, match="Received: format='something'"):
        RagQuestionAnswerer.from_preset(str(tmp_path / "other"))
