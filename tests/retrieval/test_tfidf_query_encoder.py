import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import TfidfEncoder
from keras_ragkd.retrieval import TfidfQueryEncoder
from keras_ragkd.retrieval.tfidf_query_encoder import lexical_query_encoder

QUERIES = [
    "What is the capital of Peru?",
    "Which currency is used in Côte d'Ivoire?",
    "CAPITAL   of\tSão Tomé and Príncipe!!",
    "words_with_underscores and 2024 digits",
    "zzz qqq",  # No known term: the zero vector, as in scikit-learn.
    "",
]


@pytest.fixture(scope="module")
def tfidf(countries):
    return TfidfEncoder(dim=32).fit([p["title"] + ". " + p["text"] for p in countries[0]])


@pytest.fixture(scope="module")
def layer(tfidf):
    return TfidfQueryEncoder.from_encoder(tfidf)


def test_matches_the_scikit_learn_encoder(tfidf, layer, countries):
    texts = QUERIES + [p["text"] for p in countries[0][::37]]
    expected = tfidf.encode(texts)
    vectors = layer(tf.constant(texts)).numpy()
    assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_array_equal(vectors[4:6], 0.0)
    np.testing.assert_allclose(layer.encode(texts, batch_size=4, verbose=0), expected, atol=1e-5)
    assert layer.identity == tfidf.identity and layer.trainable_weights == []


def test_unprojected_layer_matches_the_tfidf_vectors(tfidf, layer, countries):
    texts = QUERIES + [p["text"] for p in countries[0][::37]]
    lexical = TfidfQueryEncoder.from_encoder(tfidf, project=False)
    vectors = lexical(tf.constant(texts)).numpy()
    assert vectors.shape == (len(texts), len(tfidf.vocabulary)) and lexical.components is None
    np.testing.assert_allclose(vectors, tfidf.tfidf_vectors(texts).toarray(), atol=1e-6)
    assert lexical.identity.startswith(f"tfidf/{len(tfidf.vocabulary)}/")
    assert lexical_query_encoder(layer).identity == lexical.identity
    assert lexical_query_encoder(lexical) is lexical
    reloaded = TfidfQueryEncoder.from_config(lexical.get_config())
    reloaded.idf.assign(lexical.idf)
    np.testing.assert_array_equal(reloaded(tf.constant(texts)).numpy(), vectors)


def test_a_tfidf_index_accepts_the_layer(tfidf, layer, countries):
    index = PassageIndex.build(countries[0], tfidf, verbose=0)
    vectors = layer(tf.constant(["Peru. The capital of Peru is Lima."])).numpy()
    assert index.search(vectors, k=1).passage_ids == [["peru/capital"]]
    assert PassageIndex.build(countries[0][:50], layer, verbose=0).encoder_identity == (
        tfidf.identity
    )


def test_keras_file_and_savedmodel_round_trips(tmp_path, tfidf, layer):
    model = keras.Sequential([keras.Input((), dtype="string"), layer])
    expected = tfidf.encode(QUERIES)
    model.save(tmp_path / "encoder.keras")
    reloaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(reloaded(tf.constant(QUERIES)).numpy(), expected, atol=1e-5)
    assert reloaded.layers[-1].identity == tfidf.identity

    model.export(tmp_path / "exported", verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(exported.serve(tf.constant(QUERIES)).numpy(), expected, atol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Received: vocabulary="):
        TfidfQueryEncoder(["a", "a"], dim=1)
    with pytest.raises(TypeError, match="Received: encoder="):
        lexical_query_encoder("tfidf")
    with pytest.raises(ValueError, match="Received: dim=0"):
        TfidfQueryEncoder(["a", "b"], dim=0)
    with pytest.raises(ValueError, match=r"Received: ngram_range=\(2, 1\)"):
        TfidfQueryEncoder(["a", "b"], dim=1, ngram_range=(2, 1))
    with pytest.raises(ValueError, match="Received: components=None"):
        TfidfQueryEncoder.from_encoder(TfidfEncoder())
