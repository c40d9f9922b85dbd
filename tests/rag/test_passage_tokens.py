import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag import PassageTokenTable
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import PassageRetriever
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import TfidfQueryEncoder
from tests.rag.conftest import token_rag

TOKEN_IDS = np.array([[5, 6, 0], [7, 8, 9], [4, 0, 0]], "int32")


@pytest.fixture
def token_rag_layer(kb, token_preprocessor):
    passages, questions = kb
    rag = token_rag(token_preprocessor, passages, num_docs=2, backend="tensor")
    x, _ = token_preprocessor(
        tf.constant([q["question"] for q in questions[:4]]),
        tf.constant([q["answer"] for q in questions[:4]]),
    )
    return rag, x


def test_gathers_the_token_ids_of_rows_in_graph():
    table = PassageTokenTable(TOKEN_IDS)
    rows = np.array([[2, 0], [1, 1]], "int32")
    np.testing.assert_array_equal(table(rows).numpy(), TOKEN_IDS[rows])
    gather = tf.function(table, jit_compile=True)
    np.testing.assert_array_equal(gather(tf.constant(rows)).numpy(), TOKEN_IDS[rows])
    weight = table.token_ids
    assert weight.dtype == "int32" and not weight.trainable
    assert table.trainable_weights == [] and table.non_trainable_weights == [weight]


def test_from_index_tokenises_every_passage_with_the_preprocessor(kb, token_preprocessor):
    passages, _ = kb
    index = PassageIndex.from_embeddings(passages, np.eye(len(passages)))
    table = PassageTokenTable.from_index(index, token_preprocessor)
    expected = token_preprocessor.tokenize_passages([p["text"] for p in passages])
    np.testing.assert_array_equal(table.token_ids.numpy(), expected)
    assert (table.num_passages, table.length) == expected.shape


def test_config_holds_the_shape_and_the_keras_file_the_ids(tmp_path):
    table = PassageTokenTable(TOKEN_IDS, name="tokens")
    config = table.get_config()
    assert (config["num_passages"], config["length"]) == TOKEN_IDS.shape
    restored = PassageTokenTable.from_config(config)
    np.testing.assert_array_equal(restored.token_ids.numpy(), np.zeros_like(TOKEN_IDS))
    rows = keras.Input((2,), dtype="int32")
    model = keras.Model(rows, table(rows))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(
        reloaded.predict(np.array([[1, 2]]), verbose=0), TOKEN_IDS[[[1, 2]]]
    )


def test_the_rag_layer_owns_the_table_and_the_retriever_only_rows(tmp_path, token_rag_layer):
    rag, x = token_rag_layer
    retrieved = rag.retrieve(x)
    rows = retrieved["rows"].numpy()
    np.testing.assert_array_equal(
        retrieved["passage_token_ids"].numpy(), rag.passage_tokens.token_ids.numpy()[rows]
    )
    assert "passage_token_ids" not in rag.retriever(rag.query_encoder(x["query"]))
    assert not any("token" in w.path for w in rag.retriever.weights)
    rag.retriever.index.save(str(tmp_path / "index"))
    inputs = {key: keras.Input(value.shape[1:], dtype=value.dtype, name=key)
              for key, value in x.items()}
    model = keras.Model(inputs, rag(inputs))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Received: passage_token_ids.shape=\\(3,\\)"):
        PassageTokenTable([1, 2, 3])
    with pytest.raises(ValueError, match="dtype=float"):
        PassageTokenTable(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Received: token_ids=None, num_passages=2"):
        PassageTokenTable(num_passages=2)
    index = PassageIndex.from_embeddings(
        [{"id": str(i), "text": str(i)} for i in range(2)], np.eye(2)
    )
    assert set(PassageRetriever(index, k=1)(np.eye(2, dtype="float32"))) == {
        "rows", "mask", "doc_scores", "passage_embeddings"
    }


def test_builders_fill_the_table_and_with_index_rebuilds_it(kb, token_preprocessor):
    passages, _ = kb
    tfidf = TfidfEncoder(dim=8).fit([p["text"] for p in passages])
    index = PassageIndex.build(passages[:6], tfidf, verbose=0)
    model = build_rag_question_answerer(
        index, TfidfQueryEncoder.from_encoder(tfidf), token_preprocessor, generator="tiny",
        num_docs=2,
    )
    np.testing.assert_array_equal(
        model.rag.passage_tokens.token_ids.numpy(),
        token_preprocessor.tokenize_passages([p["text"] for p in passages[:6]]),
    )
    other = PassageIndex.build(passages[6:10], tfidf, verbose=0)
    swapped = model.with_index(other)
    assert swapped.rag.generator is model.rag.generator
    np.testing.assert_array_equal(
        swapped.rag.passage_tokens.token_ids.numpy(),
        token_preprocessor.tokenize_passages([p["text"] for p in passages[6:10]]),
    )
