"""A causal-LM RAG model exported with its BPE tokenizer in the graph, served without keras_ragkd."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest

from keras_ragkd.data.countries import country_passages
from keras_ragkd.models import llama3_tokenizer_from_gguf
from keras_ragkd.models import smollm2_gguf_path
from keras_ragkd.rag import CausalLMRagPreprocessor
from keras_ragkd.rag import build_causal_lm_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex

COUNTRIES = ["France", "Germany", "Peru", "Japan", "Kenya", "Canada"]
# Words of the last two never went through the tokenizer before the export:
# the served graph runs BPE merges for them (its word cache misses).
QUESTIONS = [
    "What is the capital of France?",
    "Which region is Peru in?",
    "Où est la capitale du Zubrowka, s'il vous plaît? 😀",
    "  Quelle  monnaie\tutilise-t-on au Kenya?\n",
]

# A process in which `keras_ragkd` cannot be imported. Answers come back as
# hex: an untrained model's bytes need not be valid UTF-8.
SERVE_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import json, sys
    sys.modules["keras_ragkd"] = None  # any import of the package fails
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    path, questions_file, outputs_file = sys.argv[1:4]
    with open(questions_file) as f:
        questions = json.load(f)
    reloaded = tf.saved_model.load(path)  # kept: it owns the variables
    outputs = reloaded.serve(tf.constant(questions))
    with open(outputs_file, "w") as f:
        json.dump({"answers": [a.hex() for a in outputs["answers"].numpy().tolist()],
                   "passage_ids": [[p.decode() for p in row]
                                   for row in outputs["passage_ids"].numpy().tolist()]}, f)
    """
)


@pytest.fixture(scope="module")
def model():
    """A tiny random llama with a copy head over SmolLM2's real BPE, a FAISS Flat index."""
    tokenizer = llama3_tokenizer_from_gguf(smollm2_gguf_path())
    preprocessor = CausalLMRagPreprocessor(tokenizer, question_length=24, passage_length=24,
                                           answer_length=6, query_as_text=False)
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(preprocessor.vocabulary_size, 8, mask_zero=True),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.UnitNormalization(),
    ])
    passages = [p for p in country_passages(COUNTRIES) if p["id"].endswith("/capital")]
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=preprocessor.vocabulary_size, num_layers=1, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, tie_word_embeddings=True,
    )
    # With a copy head, as the SmolLM2 student is: its prompt keys live in the
    # exported decoding loop's state.
    return build_causal_lm_rag_question_answerer(index, encoder, preprocessor, backbone,
                                                 num_docs=2, copy_head_dim=4)


@pytest.mark.slow
def test_export_answers_raw_strings_as_generate_does_without_the_package(model, tmp_path):
    path = tmp_path / "saved_model"
    model.export(str(path))
    graph = (path / "saved_model.pb").read_bytes()
    assert b"PyFunc" not in graph  # EagerPyFunc and PyFunc alike
    (tmp_path / "questions.json").write_text(json.dumps(QUESTIONS))
    (tmp_path / "serve.py").write_text(SERVE_WITHOUT_PACKAGE)
    subprocess.run(
        [sys.executable, str(tmp_path / "serve.py"), str(path),
         str(tmp_path / "questions.json"), str(tmp_path / "outputs.json")],
        check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd=str(tmp_path),
    )
    served = json.loads((tmp_path / "outputs.json").read_text())
    function = model.answer_function()
    expected = function(np.asarray(QUESTIONS))
    assert served["answers"] == [a.hex() for a in expected["answers"].numpy().tolist()]
    assert any(served["answers"])  # the random model does say something
    assert served["passage_ids"] == [[p["id"] for p in row] for row in model.retrieve(QUESTIONS)]
