import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.models import load_minilm_tokenizer
from keras_ragkd.rag import GENERATOR_SIZES
from keras_ragkd.rag import CopyTransformerGenerator
from keras_ragkd.rag import MiniLMReader
from keras_ragkd.rag import RagPreprocessor
from keras_ragkd.rag import build_generator
from keras_ragkd.rag import build_rag_question_answerer
from keras_ragkd.rag.minilm_reader import pack_left
from keras_ragkd.retrieval import PassageIndex
from keras_ragkd.retrieval import load_minilm_encoder


@pytest.fixture(scope="module")
def reader(token_preprocessor):
    return MiniLMReader(token_preprocessor.vocabulary_ids)


def test_pack_left_keeps_order_and_moves_masks_along():
    ids = np.array([[0, 7, 0, 8, 9], [5, 0, 0, 0, 0]])
    mask = ids % 2 == 1
    packed, (packed_mask,) = pack_left(ids, [tf.constant(mask)], 0)
    assert packed.numpy().tolist() == [[7, 8, 9], [5, 0, 0]]
    assert packed_mask.numpy().tolist() == [[True, False, True], [True, False, False]]


def test_reader_matches_the_backbone_on_the_packed_wordpiece_sequence(
    reader, token_preprocessor
):
    question = token_preprocessor.tokenize_questions(["What is the capital of France?"])
    passage = token_preprocessor.tokenize_passages(["The capital of France is Paris."])
    source = np.concatenate([question.numpy(), passage], axis=1)  # Padding in between.
    out = reader((source, None))
    tokens = load_minilm_tokenizer()(["What is the capital of France? The capital of France is Paris."])[0]
    wordpiece = np.array([[101] + list(tokens) + [102]])
    expected = reader.backbone(
        {"token_ids": wordpiece, "segment_ids": np.zeros_like(wordpiece),
         "padding_mask": np.ones_like(wordpiece, bool)}
    )["sequence_output"].numpy()[:, 1:]
    n = len(tokens)
    assert out["sequence_output"].shape == (1, n + 1, 384)
    np.testing.assert_allclose(out["sequence_output"].numpy(), expected, atol=1e-4)
    full_ids = np.asarray(token_preprocessor.vocabulary_ids)[out["token_ids"].numpy()[0, :n]]
    assert full_ids.tolist() == list(tokens)
    assert out["token_ids"].numpy()[0, n] == 0  # The [SEP] state: never copied.
    assert out["copy_mask"].numpy()[0].tolist() == [True] * n + [False]


def test_reader_is_frozen_by_default_and_can_be_fine_tuned(token_preprocessor, reader):
    assert reader.trainable_weights == []
    tuned = MiniLMReader(token_preprocessor.vocabulary_ids, trainable=True)
    assert len(tuned.trainable_weights) == len(tuned.backbone.weights) > 0
    restored = MiniLMReader.from_config(reader.get_config())
    assert restored.trainable is False and restored.backbone.trainable is False


def test_reader_fine_tunes_only_its_top_layers(token_preprocessor):
    tuned = MiniLMReader(token_preprocessor.vocabulary_ids, fine_tune_layers=2)
    top = tuned.backbone.transformer_layers[-2:]
    expected = [id(w) for layer in top for w in layer.trainable_weights]
    assert tuned.trainable
    assert sorted(id(w) for w in tuned.trainable_weights) == sorted(expected)
    assert tuned.backbone.token_embedding.trainable_weights == []
    source = token_preprocessor.tokenize_passages(["The capital of Peru is Lima."])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tuned((source, None), training=True)["sequence_output"])
    gradients = tape.gradient(loss, tuned.trainable_weights)
    assert all(g is not None and np.abs(g).max() > 0 for g in gradients)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tuned))
    assert restored.fine_tune_layers == 2
    assert len(restored.trainable_weights) == len(tuned.trainable_weights)


def test_reader_rejects_bad_vocabulary():
    with pytest.raises(ValueError, match="Received: vocabulary_ids="):
        MiniLMReader([])


@pytest.mark.parametrize("fine_tune_layers", [-1, 7, 1.0, True])
def test_reader_rejects_bad_fine_tune_layers(token_preprocessor, fine_tune_layers):
    with pytest.raises(ValueError, match="Received: fine_tune_layers="):
        MiniLMReader(token_preprocessor.vocabulary_ids, fine_tune_layers=fine_tune_layers)


def test_reader_fine_tune_layers_needs_the_minilm_reader(token_preprocessor):
    with pytest.raises(ValueError, match="Received: source_encoder=None"):
        build_generator(dict(GENERATOR_SIZES["tiny"], reader_fine_tune_layers=1),
                        token_preprocessor)


def test_generator_on_the_reader_trains_only_its_own_layers(reader, token_preprocessor):
    keras.utils.set_random_seed(0)
    generator = CopyTransformerGenerator(
        token_preprocessor.vocabulary_size, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_encoder_layers=1, num_decoder_layers=1,
        source_encoder=reader,
    )
    source = token_preprocessor.tokenize_passages(["The capital of Peru is Lima."])
    inputs = {"encoder_token_ids": source, "decoder_token_ids": np.array([[2, 5]])}
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(generator(inputs))
    gradients = tape.gradient(loss, generator.trainable_variables)
    assert all(g is not None for g in gradients)
    assert not any(v is w for v in generator.trainable_variables for w in reader.weights)
    log_probs = generator(inputs).numpy()
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-4)
    restored = CopyTransformerGenerator.from_config(generator.get_config())
    assert isinstance(restored.source_encoder, MiniLMReader)


def test_generator_on_the_reader_keeps_each_source_tokens_identity(
    reader, token_preprocessor
):
    """Reader states plus the generator's own token embedding: changing one
    token's embedding row changes the encoder states, most at its position."""
    keras.utils.set_random_seed(0)
    generator = CopyTransformerGenerator(
        token_preprocessor.vocabulary_size, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_encoder_layers=1, num_decoder_layers=1,
        dropout=0.0, source_encoder=reader,
    )
    source = token_preprocessor.tokenize_passages(["The capital of Peru is Lima."])
    before = generator.encode(source)
    lima = int(token_preprocessor.tokenize_passages(["Lima"])[0, 0])
    embeddings = generator.embedding.token_embedding.embeddings
    shift = np.linspace(-1.0, 1.0, 16, dtype="float32")[None]
    embeddings.assign(tf.tensor_scatter_nd_add(embeddings, [[lima]], shift))
    after = generator.encode(source)
    change = np.abs(after["encoder_outputs"] - before["encoder_outputs"]).max(-1)[0]
    assert change.max() > 1e-3
    assert before["encoder_token_ids"].numpy()[0, change.argmax()] == lima


@pytest.mark.slow
def test_minilm_reader_rag_model_fits_and_round_trips(kb, token_preprocessor, tmp_path):
    """A MiniLM-reader generator (top layer fine-tuned) in a full RAG model:
    fit, generate, `.keras`."""
    passages, questions = kb
    encoder = load_minilm_encoder(sequence_length=24)
    encoder.trainable = False
    index = PassageIndex.build(passages, encoder, verbose=0)
    index.save(str(tmp_path / "index"))
    preprocessor = RagPreprocessor(
        token_preprocessor.tokenizer, token_preprocessor.vocabulary_ids,
        question_length=12, passage_length=16, answer_length=6,
    )
    keras.utils.set_random_seed(0)
    model = build_rag_question_answerer(
        index, encoder, preprocessor,
        generator=dict(source_encoder="minilm", reader_fine_tune_layers=1, hidden_dim=32,
                       num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                       intermediate_dim=64),
        num_docs=2,
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit([q["question"] for q in questions], [q["answer"] for q in questions],
                        batch_size=16, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    answers = model.generate(["What is the capital of France?"])
    assert isinstance(answers[0], str)
    path = str(tmp_path / "rag.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    x = next(iter(model.preprocess(["What is the capital of Peru?"], ["Lima"])))[0]
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-5)
    reader = model.rag.generator.source_encoder
    top_layer = reader.backbone.transformer_layers[-1]
    assert len(reader.trainable_weights) == len(top_layer.trainable_weights) > 0
    assert restored.rag.generator.source_encoder.fine_tune_layers == 1
    assert len(restored.trainable_variables) == len(model.trainable_variables)
