"""String-in SavedModels of `RagQuestionAnswerer`, served without keras_ragkd."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.serving import export_model

QUESTIONS = [
    "What is the capital of France?",
    "What is the currency of Japan?",
    "What are people from Kenya called?",
    "Which region is Peru in?",
]

# A process in which `keras_ragkd` cannot be imported: only TensorFlow and
# TensorFlow Text (the WordPiece ops) serve the questions.
SERVE_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import json, sys
    sys.modules["keras_ragkd"] = None  # any import of the package fails
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    path, questions_file, outputs_file, signature = sys.argv[1:5]
    with open(questions_file) as f:
        questions = json.load(f)
    reloaded = tf.saved_model.load(path)
    outputs = getattr(reloaded, signature)(tf.constant(questions))
    outputs = {key: value.numpy().tolist() for key, value in outputs.items()}
    decoded = {
        key: [[v.decode() if isinstance(v, bytes) else v for v in row]
              if isinstance(row, list) else (row.decode() if isinstance(row, bytes) else row)
              for row in value]
        for key, value in outputs.items()
    }
    with open(outputs_file, "w") as f:
        json.dump(decoded, f)
    """
)


def serve_in_fresh_process(tmp_path, export_path, questions, signature="serve"):
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    (tmp_path / "serve.py").write_text(SERVE_WITHOUT_PACKAGE)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, str(tmp_path / "serve.py"), str(export_path),
         str(tmp_path / "questions.json"), str(tmp_path / "outputs.json"), signature],
        check=True, env=environment, cwd=str(tmp_path),
    )
    return json.loads((tmp_path / "outputs.json").read_text())


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    _, _, _, evaluator = trained
    path = tmp_path_factory.mktemp("export") / "saved_model"
    evaluator.export(str(path))
    return evaluator, path


@pytest.mark.slow
def test_export_serves_the_same_answers_without_the_package(exported, tmp_path):
    model, path = exported
    outputs = serve_in_fresh_process(tmp_path, path, QUESTIONS)
    assert outputs["answers"] == model.generate(QUESTIONS)
    retrieved = model.retrieve(QUESTIONS)
    assert outputs["passage_ids"] == [[p["id"] for p in r] for r in retrieved]
    np.testing.assert_allclose(
        outputs["passage_probabilities"],
        [[p["probability"] for p in r] for r in retrieved], atol=1e-5,
    )
    assert model.rag.retriever.backend == "faiss"  # switched back after the export


@pytest.mark.slow
def test_export_retrieve_signature_returns_passages(exported, tmp_path):
    model, path = exported
    outputs = serve_in_fresh_process(tmp_path, path, QUESTIONS[:1], signature="retrieve")
    (expected,) = model.retrieve(QUESTIONS[:1])
    assert outputs["passage_ids"][0] == [p["id"] for p in expected]
    assert outputs["passage_texts"][0] == [p["text"] for p in expected]
    assert sorted(outputs) == [
        "passage_ids", "passage_probabilities", "passage_scores", "passage_texts"
    ]


@pytest.mark.slow
def test_export_has_no_python_callbacks_and_lists_its_signatures(exported):
    _, path = exported
    graph = (path / "saved_model.pb").read_bytes()
    assert b"EagerPyFunc" not in graph and b"PyFunc" not in graph
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True, check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    ).stdout
    assert "signature_def['serve']" in shown and "signature_def['retrieve']" in shown
    assert "answers" in shown and "passage_probabilities" in shown


@pytest.mark.slow
def test_export_refuses_an_approximate_index_unless_told(kb, trained, encoder, tmp_path):
    passages, _ = kb
    _, _, _, evaluator = trained
    hnsw = evaluator.with_index(PassageIndex.build(passages, encoder, index_factory="HNSW8"))
    with pytest.raises(ValueError, match="Received: index_factory='HNSW8'"):
        hnsw.export(str(tmp_path / "hnsw"))
    with pytest.raises(ValueError, match="Received: index_factory='HNSW8'"):
        export_model(hnsw, str(tmp_path / "hnsw"))
    assert not (tmp_path / "hnsw").exists()
    hnsw.export(str(tmp_path / "hnsw"), exact_retrieval=True)
    assert (tmp_path / "hnsw" / "saved_model.pb").exists()


@pytest.mark.slow
def test_generate_and_predict_take_raw_strings(trained):
    _, _, _, evaluator = trained
    log_probs = evaluator.predict(QUESTIONS[:2], verbose=0)
    assert log_probs.shape == (2, 1, evaluator.preprocessor.vocabulary_size)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-4)
    forced = evaluator.predict((QUESTIONS[:2], ["Paris", "JPY"]), verbose=0)
    assert forced.shape == (2, evaluator.preprocessor.answer_length,
                            evaluator.preprocessor.vocabulary_size)
    # The first teacher-forced step is the same distribution.
    np.testing.assert_allclose(forced[:, 0], log_probs[:, 0], atol=1e-5)
