"""SavedModel export: reloaded in a fresh Python process, outputs unchanged."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.data.countries import country_passages
from keras_ragkd.retrieval import MiniLMEncoder
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.serving import export_model

QUESTIONS = [
    "What is the capital of France?",
    "Which currency is used in Japan?",
    "What are people from Kenya called?",
]

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # registers the WordPiece ops of in-graph tokenizers

    path, inputs_file, outputs_file = sys.argv[1:4]
    with open(inputs_file) as f:
        inputs = json.load(f)
    reloaded = tf.saved_model.load(path)  # keep the root: it owns the variables
    outputs = reloaded.serve(tf.constant(inputs["values"], dtype=inputs["dtype"]))
    np.savez(outputs_file, **{key: value.numpy() for key, value in outputs.items()})
    """
)


def run_in_fresh_process(tmp_path, export_path, values, dtype):
    """Loads the export with plain TensorFlow in a new interpreter."""
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"values": values, "dtype": dtype}))
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    outputs_file = tmp_path / "outputs.npz"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, str(script), str(export_path), str(inputs_file), str(outputs_file)],
        check=True,
        env=environment,
    )
    with np.load(outputs_file, allow_pickle=False) as outputs:
        return dict(outputs)


def assert_no_python_callbacks(export_path):
    graph = (export_path / "saved_model.pb").read_bytes()
    assert b"EagerPyFunc" not in graph and b"PyFunc" not in graph


def test_export_converts_faiss_retriever_and_restores_it(tmp_path):
    rng = np.random.default_rng(0)
    passages = [{"id": f"p{i}", "text": f"passage {i}"} for i in range(50)]
    index = PassageIndex.from_embeddings(passages, rng.normal(size=(50, 8)))
    index.save(tmp_path / "kb")
    inputs = keras.Input((8,))
    retriever = PassageRetriever(index, k=3)
    model = keras.Model(inputs, retriever(keras.layers.Dense(8)(inputs)))
    queries = rng.normal(size=(5, 8)).astype("float32")
    expected = model.predict(queries, verbose=0)

    export_path = tmp_path / "export"
    assert export_model(model, export_path) == str(export_path)
    assert retriever.backend == "faiss"  # switched back after the export
    assert_no_python_callbacks(export_path)
    outputs = run_in_fresh_process(tmp_path, export_path, queries.tolist(), "float32")
    assert set(outputs) == set(expected)
    for key in expected:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5)

    export_model(model, export_path)  # replaces an existing export
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["kb", "export", "inputs.json", "serve.py", "outputs.npz"]
    )


@pytest.mark.slow
def test_raw_string_rag_retrieval_exports(tmp_path):
    countries = ("france", "japan", "kenya", "peru", "norway", "india", "egypt", "chile")
    passages = [p for p in country_passages() if p["id"].split("/")[0] in countries]
    encoder = MiniLMEncoder(sequence_length=32)
    country_index = PassageIndex.build(passages, encoder, verbose=0)
    country_index.save(tmp_path / "kb")
    texts = keras.Input(shape=(), dtype="string")
    retriever = PassageRetriever(country_index, k=5)
    outputs = retriever(encoder(texts))
    model = keras.Model(texts, {"rows": outputs["rows"], "doc_scores": outputs["doc_scores"]})
    expected = model.predict(tf.data.Dataset.from_tensors(QUESTIONS), verbose=0)

    export_path = tmp_path / "export"
    export_model(model, export_path)
    assert_no_python_callbacks(export_path)
    outputs = run_in_fresh_process(tmp_path, export_path, QUESTIONS, "string")
    np.testing.assert_array_equal(outputs["rows"], expected["rows"])
    np.testing.assert_allclose(outputs["doc_scores"], expected["doc_scores"], atol=1e-5)
    found = [[country_index.passages[r].id for r in row] for row in outputs["rows"]]
    assert "france/capital" in found[0]
    assert "japan/currency" in found[1]
    assert "kenya/people" in found[2]
