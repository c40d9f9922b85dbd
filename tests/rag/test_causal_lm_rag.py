"""Decoder-only RAG: a keras-hub llama backbone as the generator (issue 17 §2)."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.data.countries import country_passages
from keras_ragkd.models import ByteLevelLlama3Tokenizer
from keras_ragkd.rag import CausalLMGenerator
from keras_ragkd.rag import CausalLMRagPreprocessor
from keras_ragkd.rag import CausalLMRagQuestionAnswerer
from keras_ragkd.rag import CopyHead
from keras_ragkd.rag import RagSequenceLoss
from keras_ragkd.rag import RagTokenLoss
from keras_ragkd.rag import build_causal_lm_rag_question_answerer
from keras_ragkd.rag.causal_lm_generator import _pad_to_multiple
from keras_ragkd.rag.causal_lm_generator import left_pad
from keras_ragkd.retrieval import PassageIndex

COUNTRIES = ["France", "Germany", "Peru", "Japan", "Kenya", "Canada"]
QUESTIONS = [f"What is the capital of {c}?" for c in COUNTRIES[:4]]
ANSWERS = ["Paris", "Berlin", "Lima", "Tokyo"]


def _byte_level_alphabet():
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_tokenizer():
    """A byte-level BPE of 262 tokens with the ChatML special tokens."""
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + _byte_level_alphabet()
    tokens += ["Ġt", "he", "Ġthe"]
    return ByteLevelLlama3Tokenizer(
        {token: i for i, token in enumerate(tokens)},
        merges=["Ġ t", "h e", "Ġt he"],
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        misc_special_tokens={"<|endoftext|>"},
        pad_token="<|endoftext|>",
    )


def tiny_backbone(vocabulary_size, seed=0, dtype=None):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.Llama3Backbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=32, intermediate_dim=64,
        tie_word_embeddings=True, dtype=dtype,
    )


def token_query_encoder(vocabulary_size, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocabulary_size, 16, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.UnitNormalization(),
        ]
    )


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def passages():
    return [p for p in country_passages(COUNTRIES) if p["id"].endswith("/capital")]


def make_preprocessor(tokenizer, question_length=40, passage_length=40, answer_length=8,
                      **kwargs):
    return CausalLMRagPreprocessor(
        tokenizer, question_length=question_length, passage_length=passage_length,
        answer_length=answer_length, query_as_text=False, **kwargs,
    )


def make_model(tokenizer, passages, preprocessor=None, num_docs=2, marginalization="token",
               lora_rank=None, seed=0, dtype=None, copy_head_dim=None):
    """A task model: token-id query encoder, FAISS Flat index, tiny llama."""
    preprocessor = preprocessor or make_preprocessor(tokenizer)
    encoder = token_query_encoder(preprocessor.vocabulary_size, seed=seed)
    passage_ids = preprocessor.tokenize_passages([p["text"] for p in passages])
    index = PassageIndex.from_embeddings(passages, np.asarray(encoder(passage_ids)))
    return build_causal_lm_rag_question_answerer(
        index, encoder, preprocessor, tiny_backbone(preprocessor.vocabulary_size, seed, dtype),
        num_docs=num_docs, marginalization=marginalization, doc_score_scale=5.0,
        lora_rank=lora_rank, train_query_encoder=True, copy_head_dim=copy_head_dim,
    )


def batch(model, questions=QUESTIONS[:2], answers=ANSWERS[:2]):
    return model.preprocessor(tf.constant(questions), tf.constant(answers))


def test_prompt_ids_equal_the_whole_prompt_tokenized(tokenizer):
    preprocessor = make_preprocessor(tokenizer)
    generator = CausalLMGenerator(
        tiny_backbone(preprocessor.vocabulary_size), padding_id=preprocessor.padding_id,
        **preprocessor.prompt_pieces,
    )
    question = "What is the capital of  Zubrowka?"
    passage = "The capital of Zubrowka is Lutz (2024)."
    x, _ = preprocessor(tf.constant([question]), tf.constant(["Lutz"]))
    passage_ids = preprocessor.tokenize_passages([passage, "Short."])
    encoded = generator.encode_prompts(x["question_token_ids"], passage_ids[None])
    ids = encoded["prompt_token_ids"].numpy()
    mask = encoded["prompt_padding_mask"].numpy()
    prompt = preprocessor.format_prompt(question, passage)
    assert prompt.startswith("<|im_start|>user\nContext: The capital")
    assert prompt.endswith("Question: What is the capital of  Zubrowka?<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert ids[0][mask[0]].tolist() == [int(i) for i in tokenizer(prompt)]
    # Left padding: the shorter prompt ends where the longer one does.
    assert not mask[1, 0] and mask[1, -1] and ids[1, 0] == preprocessor.padding_id
    ids, mask = left_pad(tf.ragged.constant([[1, 2, 3], [4]]), 9)
    assert ids.numpy().tolist() == [[1, 2, 3], [9, 9, 4]]
    # Cached decoding pads further, to a multiple of PROMPT_LENGTH_MULTIPLE.
    padded, padded_mask = _pad_to_multiple(ids, mask, 4, 9)
    assert padded.numpy().tolist() == [[9, 1, 2, 3], [9, 9, 9, 4]]
    assert padded_mask.numpy().tolist() == [[False, True, True, True], [False] * 3 + [True]]
    same, _ = _pad_to_multiple(padded, padded_mask, 4, 9)
    assert same.shape == (2, 4)


def test_copy_mask_marks_the_passage_and_optionally_the_question(tokenizer):
    preprocessor = make_preprocessor(tokenizer)
    generator = CausalLMGenerator.from_preprocessor(
        tiny_backbone(preprocessor.vocabulary_size), preprocessor)
    question, passage = "Where is Lutz?", "Lutz is in Zubrowka."
    x, _ = preprocessor(tf.constant([question]), tf.constant(["Zubrowka"]))
    passage_ids = preprocessor.tokenize_passages([passage])[None]
    tokens = [int(i) for i in passage_ids[0, 0] if i != preprocessor.padding_id]
    question_tokens = [int(i) for i in x["question_token_ids"][0] if i != preprocessor.padding_id]
    for copy_from_question, expected in ((False, tokens), (True, tokens + question_tokens)):
        encoded = generator.encode_prompts(x["question_token_ids"], passage_ids,
                                           copy_from_question=copy_from_question)
        copyable = encoded["prompt_token_ids"][encoded["copy_mask"]].numpy().tolist()
        assert copyable == expected  # Never the chat template's tokens.
        assert not np.any(encoded["copy_mask"].numpy() & ~encoded["prompt_padding_mask"].numpy())


def test_copy_head_copies_question_tokens_only_when_allowed(tokenizer, passages):
    model = make_model(tokenizer, passages, num_docs=1, copy_head_dim=8)
    x, _ = batch(model, QUESTIONS[:1], ANSWERS[:1])
    model(x)
    gate = model.rag.generator.copy_head.gate_dense
    gate.kernel.assign(tf.zeros_like(gate.kernel))
    gate.bias.assign([-30.0])  # Copy only: P(v) is the copy attention on v.
    prompt = model.rag.generator.encode_prompts(
        x["question_token_ids"], model.rag.retrieve(x)["passage_token_ids"])
    passage_tokens = set(prompt["prompt_token_ids"][prompt["copy_mask"]].numpy().tolist())
    question_only = sorted(set(x["question_token_ids"][0].numpy().tolist()) - passage_tokens
                           - {model.preprocessor.padding_id})
    assert question_only
    for copy_from_question in (False, True):
        model.rag.copy_from_question = copy_from_question
        probs = np.exp(model(x).numpy()[0, 0])
        assert bool(probs[question_only].sum() > 1e-3) is copy_from_question
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-4)


def _contains(sequence, part):
    return any(sequence[i:i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def test_answer_leading_space_makes_answers_copyable_from_the_passage(tokenizer):
    passage, answer = "The capital of Zubrowka is Lutz.", "Lutz"
    spaced = make_preprocessor(tokenizer, answer_leading_space=True)
    assert spaced.get_config()["answer_leading_space"] is True
    passage_ids = [int(i) for i in spaced.tokenize_passages([passage])[0] if i != spaced.padding_id]
    for preprocessor, copyable in ((make_preprocessor(tokenizer), False), (spaced, True)):
        x, labels = preprocessor(tf.constant(["What is the capital of Zubrowka?"]),
                                 tf.constant([answer]))
        answer_ids = [int(i) for i in labels[0] if i not in (preprocessor.padding_id,
                                                             preprocessor.end_id)]
        # "Ġ" starts the spaced answer as it starts the word in the passage.
        assert (tokenizer.id_to_token(answer_ids[0]) == "Ġ") is copyable
        assert _contains(passage_ids, answer_ids)
        assert _contains(passage_ids, [tokenizer.token_to_id("Ġ")] + answer_ids) is not copyable
        assert x["decoder_token_ids"][0, 1:].numpy().tolist()[:len(answer_ids) - 1] == (
            answer_ids[:-1])
        assert preprocessor.detokenize(labels).tolist() == [answer]


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))


@pytest.mark.parametrize("marginalization", ["token", "sequence"])
def test_marginal_matches_numpy_reference(tokenizer, passages, marginalization):
    model = make_model(tokenizer, passages, marginalization=marginalization)
    rag, preprocessor = model.rag, model.preprocessor
    x, labels = batch(model)
    outputs = model(x).numpy()
    retrieved = rag.retrieve(x)
    table = rag.passage_tokens.token_ids.numpy()
    backbone = rag.generator.backbone
    pad = preprocessor.padding_id
    pieces = preprocessor.prompt_pieces
    scale = float(rag.doc_score_scale.numpy())
    T = labels.shape[1]
    for b in range(2):
        per_doc = []
        for z in range(rag.num_docs):
            passage = [t for t in table[retrieved["rows"][b, z]] if t != pad]
            question = [t for t in x["question_token_ids"][b].numpy() if t != pad]
            answer = x["decoder_token_ids"][b].numpy()[1:].tolist()
            prompt = (pieces["prefix_ids"] + passage + pieces["middle_ids"] + question
                      + pieces["suffix_ids"])
            ids = np.asarray([prompt + answer], "int32")
            hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
            logits = backbone.token_embedding(hidden, reverse=True).numpy()[0]
            per_doc.append(_log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + T]))
        per_doc = np.stack(per_doc)  # (num_docs, T, V)
        doc_lp = _log_softmax(scale * retrieved["doc_scores"][b].numpy())
        if marginalization == "token":
            expected = _logsumexp(doc_lp[:, None, None] + per_doc, axis=0)
            np.testing.assert_allclose(outputs[b], expected, atol=2e-4)
        else:
            expected = per_doc.copy()
            expected[:, 0] += doc_lp[:, None]
            np.testing.assert_allclose(outputs[b], expected, atol=2e-4)
    assert outputs.shape[-1] == preprocessor.vocabulary_size


def test_padding_invariance(tokenizer, passages):
    short = make_model(tokenizer, passages)
    # More padding in the questions, passages and answers; same weights.
    padded_preprocessor = make_preprocessor(tokenizer, question_length=64,
                                            passage_length=72, answer_length=12)
    padded = make_model(tokenizer, passages, preprocessor=padded_preprocessor)
    for part in ("query_encoder", "generator"):
        getattr(padded.rag, part).set_weights(getattr(short.rag, part).get_weights())
    x, labels = batch(short)
    px, plabels = batch(padded)
    out, pout = short(x).numpy(), padded(px).numpy()
    T = labels.shape[1]
    np.testing.assert_allclose(out, pout[:, :T], atol=1e-5)
    loss = RagTokenLoss(padding_id=short.preprocessor.padding_id)
    np.testing.assert_allclose(loss(labels, out), loss(plabels, pout), atol=1e-5)
    # An example alone and in a batch with longer prompts.
    alone, _ = batch(short, QUESTIONS[:1], ANSWERS[:1])
    np.testing.assert_allclose(short(alone).numpy()[0], out[0], atol=1e-5)


def test_query_encoder_and_backbone_get_gradients(tokenizer, passages):
    model = make_model(tokenizer, passages)
    x, labels = batch(model)
    loss = RagTokenLoss(padding_id=model.preprocessor.padding_id)
    with tf.GradientTape() as tape:
        value = loss(labels, model(x, training=True))
    encoder_vars = model.rag.query_encoder.trainable_variables
    backbone_vars = model.rag.generator.backbone.trainable_variables
    grads = tape.gradient(value, encoder_vars + backbone_vars + [model.rag.log_doc_score_scale])
    assert all(g is not None and np.all(np.isfinite(tf.convert_to_tensor(g))) for g in grads)
    assert float(tf.norm(tf.convert_to_tensor(grads[0]))) > 0  # query encoder embedding
    assert float(tf.abs(grads[-1])) > 0  # passage-posterior scale


def test_lora_trains_only_lora_weights_and_scale(tokenizer, passages):
    # RAG-Sequence here, so this fit also exercises `RagSequenceLoss`.
    model = make_model(tokenizer, passages, lora_rank=2, marginalization="sequence")
    model.rag.query_encoder.trainable = False
    trainable = {v.path for v in model.trainable_variables}
    assert trainable and all("lora" in p or p.endswith("log_doc_score_scale") for p in trainable)
    assert any(p.endswith("log_doc_score_scale") for p in trainable)
    before = {v.path: v.numpy().copy() for v in model.variables}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert isinstance(model.loss, RagSequenceLoss)
    assert model.loss.padding_id == model.preprocessor.padding_id
    dataset = model.preprocess(QUESTIONS, ANSWERS, batch_size=2).cache().repeat(3)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = {p for v in model.variables if (p := v.path) in before
               and not np.array_equal(before[p], v.numpy())}
    changed -= {p for p in changed if "adam" in p or "iteration" in p}
    assert changed and changed <= trainable
    assert any("lora" in p for p in changed)


def test_lora_in_mixed_bfloat16_keeps_frozen_weights_bit_identical(tokenizer, passages):
    # bfloat16 compute, float32 variables: only LoRA factors and the scale move.
    model = make_model(tokenizer, passages, lora_rank=2, dtype="mixed_bfloat16")
    model.rag.query_encoder.trainable = False
    backbone = model.rag.generator.backbone
    assert backbone.compute_dtype == "bfloat16"
    assert {v.dtype for v in backbone.weights} == {"float32"}
    lora = {v.path for v in backbone.weights if "lora" in v.path}
    assert {v.path for v in model.trainable_variables} == lora | {model.rag.log_doc_score_scale.path}
    # Two factors for each query and value projection of every layer.
    assert len(lora) == 2 * 2 * backbone.num_layers
    frozen = {v.path: v.numpy().copy() for v in backbone.weights if v.path not in lora}
    frozen.update({v.path: v.numpy().copy() for v in model.rag.query_encoder.weights})
    outputs = model(batch(model)[0])
    assert outputs.dtype == "float32" and np.all(np.isfinite(outputs.numpy()))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    dataset = model.preprocess(QUESTIONS, ANSWERS, batch_size=2).cache().repeat(2)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    current = {v.path: v for v in backbone.weights + model.rag.query_encoder.weights}
    for path, value in frozen.items():
        np.testing.assert_array_equal(current[path].numpy(), value, err_msg=path)
    assert any(not np.all(v.numpy() == 0) for v in backbone.weights
               if v.path.endswith("lora_kernel_b"))


def fit_capitals(model):
    """`model` fitted to four capital questions (full fine-tuning): `(model, history)`."""
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    # Tokenised once: keras-hub's BPE is slow inside `tf.data` (~0.2 s a batch).
    dataset = model.preprocess(QUESTIONS, ANSWERS, batch_size=4).cache().repeat(20)
    return model, model.fit(dataset, epochs=4, verbose=0)


@pytest.fixture(scope="module")
def trained(tokenizer, passages):
    """A tiny llama RAG model fitted to four capital questions."""
    return fit_capitals(make_model(tokenizer, passages))


def test_fit_lowers_the_loss(trained):
    model, history = trained
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(model.loss, RagTokenLoss)
    assert model.loss.padding_id == model.preprocessor.padding_id


def test_generate_returns_strings_and_stops_at_im_end(trained):
    model, _ = trained
    answers = model.generate(QUESTIONS, max_length=8)
    assert all(isinstance(a, str) for a in answers)
    assert answers == ANSWERS
    # The cached greedy search and the full-recompute beam search agree.
    x = model.preprocessor(tf.constant(QUESTIONS))
    cached, cached_scores = model.rag.generate_token_ids(
        x, model.preprocessor.start_id, model.preprocessor.end_id, max_length=8)
    full, full_scores = model.rag.generate_token_ids(
        x, model.preprocessor.start_id, model.preprocessor.end_id, max_length=8,
        use_cache=False)
    np.testing.assert_array_equal(cached.numpy(), full.numpy())
    np.testing.assert_allclose(cached_scores.numpy(), full_scores.numpy(), atol=1e-3)
    end, pad = model.preprocessor.end_id, model.preprocessor.padding_id
    for row in cached.numpy():
        stop = row.tolist().index(end)  # "<|im_end|>" is emitted, then padding only.
        assert stop < 8 and all(t == pad for t in row[stop + 1 :])
    assert model.generate(QUESTIONS[:2], marginalization="sequence", num_beams=2) == ANSWERS[:2]
    for bad in (0, True, 8.0):
        with pytest.raises(ValueError, match=f"positive integer. Received: max_length={bad!r}"):
            model.rag.generator.rag_token_greedy_search(None, None, 0, end, max_length=bad)


def test_keras_file_round_trip(trained, tmp_path):
    model, _ = trained
    model.rag.retriever.index.save(str(tmp_path / "index"))
    path = str(tmp_path / "causal_rag.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, CausalLMRagQuestionAnswerer)
    assert isinstance(restored.rag.generator.backbone, keras_hub.models.Llama3Backbone)
    x, _ = batch(model)
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-5)
    assert restored.generate(QUESTIONS) == ANSWERS
    assert isinstance(restored.loss, RagTokenLoss)


def test_with_index_shares_the_generator(trained):
    model, _ = trained
    swapped = model.with_index(model.rag.retriever.index, num_docs=1)
    assert isinstance(swapped, CausalLMRagQuestionAnswerer)
    assert swapped.rag.generator is model.rag.generator
    assert swapped.rag.num_docs == 1


@pytest.fixture(scope="module")
def copying(tokenizer, passages):
    """A tiny llama RAG model with a copy head, fitted to four capital questions."""
    return fit_capitals(make_model(tokenizer, passages, copy_head_dim=8))


def test_copy_head_trains_and_cached_decoding_matches_recompute(copying):
    model, history = copying
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    copy_variables = [v for v in model.trainable_variables if "copy_head" in v.path]
    # Query, key, gate kernel and bias, continuation bonus, coverage penalty.
    assert len(copy_variables) == 6
    x = model.preprocessor(tf.constant(QUESTIONS))
    ends = model.preprocessor.start_id, model.preprocessor.end_id
    cached, cached_scores = model.rag.generate_token_ids(x, *ends, max_length=8)
    full, full_scores = model.rag.generate_token_ids(x, *ends, max_length=8, use_cache=False)
    np.testing.assert_array_equal(cached.numpy(), full.numpy())
    np.testing.assert_allclose(cached_scores.numpy(), full_scores.numpy(), atol=1e-3)
    marginal = model(batch(model)[0])  # RAG-Token log-probabilities of the mixture.
    np.testing.assert_allclose(np.exp(marginal.numpy()).sum(-1), 1.0, rtol=1e-4)


def test_copy_head_round_trips_through_keras_file(copying, tmp_path):
    model, _ = copying
    model.rag.retriever.index.save(str(tmp_path / "index"))
    model.save(str(tmp_path / "copying.keras"))
    restored = keras.saving.load_model(str(tmp_path / "copying.keras"))
    assert isinstance(restored, CausalLMRagQuestionAnswerer)
    assert restored.rag.generator.copy_head.key_dim == 8
    x, _ = batch(model)
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-5)
    assert restored.generate(QUESTIONS) == model.generate(QUESTIONS)


def test_gate_supervision_adds_the_switch_loss_only_in_training(tokenizer, passages):
    head = CopyHead(key_dim=8, gate_supervision=2.0, name="copy_head")
    model = make_model(tokenizer, passages, copy_head_dim=head)
    x, _ = batch(model)
    model(x, training=False)
    assert model.losses == []
    model(x, training=True)
    (switch,) = model.losses
    assert float(switch) > 0
    head.gate_supervision = 0.0
    model(x, training=True)
    assert model.losses == []
    head.gate_supervision = 2.0
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    dataset = model.preprocess(QUESTIONS, ANSWERS, batch_size=4).cache().repeat(20)
    model.fit(dataset, epochs=3, verbose=0)
    model(x, training=True)
    # The taught switch copies the capitals and generates the end.
    assert float(model.losses[0]) < 0.5 * float(switch)


def test_generator_validation(tokenizer):
    with pytest.raises(ValueError, match="suffix_ids"):
        CausalLMGenerator(tiny_backbone(262), prefix_ids=[1], middle_ids=[2])
    with pytest.raises(ValueError, match="llama"):
        CausalLMGenerator(keras.layers.Dense(2), suffix_ids=[1])
    with pytest.raises(ValueError, match="user_template"):
        CausalLMRagPreprocessor(tokenizer, user_template="{question} then {passage}")


@pytest.mark.slow
def test_smollm2_reads_the_retrieved_passage():
    """The real SmolLM2-135M-Instruct, MiniLM on raw strings, zero-shot."""
    from keras_ragkd.models import load_smollm2
    from keras_ragkd.retrieval import load_minilm_encoder

    causal_lm = load_smollm2(sequence_length=64)
    encoder = load_minilm_encoder(sequence_length=24)
    kb = [
        {"id": "zubrowka", "text": "The capital of Zubrowka is Lutz."},
        {"id": "moon", "text": "The Moon orbits the Earth."},
        {"id": "paris", "text": "Paris is known for the Eiffel Tower."},
    ]
    index = PassageIndex.build(kb, encoder, verbose=0)
    preprocessor = CausalLMRagPreprocessor(
        causal_lm.preprocessor.tokenizer, question_length=24, passage_length=24,
        answer_length=12,
    )
    model = build_causal_lm_rag_question_answerer(
        index, encoder, preprocessor, causal_lm, num_docs=2)
    question = "What is the capital of Zubrowka?"
    x = preprocessor(tf.constant([question]))
    ids = model.rag.generator.encode_prompts(
        x["question_token_ids"], model.rag.retrieve(x)["passage_token_ids"])
    prompt = preprocessor.format_prompt(question, kb[0]["text"])
    first = ids["prompt_token_ids"][0][ids["prompt_padding_mask"][0]].numpy().tolist()
    assert first == [int(i) for i in causal_lm.preprocessor.tokenizer(prompt)]
    # Eagerly: tracing `generate`'s graph through 30 layers costs ~25 s here
    # (the tiny-model tests cover the compiled `generate`).
    token_ids, _ = model.rag.generate_token_ids(
        x, preprocessor.start_id, preprocessor.end_id, max_length=12)
    (answer,) = preprocessor.detokenize(token_ids)
    assert answer == "Lutz is the capital of Zubrowka."
    assert preprocessor.end_id in token_ids.numpy()[0].tolist()
