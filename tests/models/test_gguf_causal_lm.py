import keras
import keras_hub
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from keras_ragkd.models import LlamaGGUFFile
from keras_ragkd.models import llama3_backbone_from_gguf
from keras_ragkd.models import load_gguf_causal_lm
from keras_ragkd.models import unpermute_rope_rows

PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
]


def dequantized(checkpoint):
    """Every tensor of the file as float32, in the file's own layout."""
    return {name: checkpoint.tensor(name) for name in checkpoint.tensor_names}


# Hundreds of (5 x 576) @ (576 x 1536) products: OpenBLAS threads only
# contend for them (10x slower on 2 busy cores), so one thread.
@threadpool_limits.wrap(limits=1, user_api="blas")
def numpy_llama_logits(config, weights, token_ids):
    """An independent float64 llama forward pass, as llama.cpp computes it.

    It runs on the tensors exactly as stored in the GGUF file: the q/k rows
    stay in llama.cpp's order and RoPE rotates interleaved pairs of
    dimensions `(2i, 2i + 1)` (llama.cpp's "normal" RoPE for `llama`),
    whereas keras-hub rotates halves `(i, i + head_dim / 2)` of un-permuted
    rows. Agreement therefore also checks `unpermute_rope_rows`.
    """
    c = config
    heads, kv_heads = c["num_query_heads"], c["num_key_value_heads"]
    head_dim = c["hidden_dim"] // heads
    length = len(token_ids)

    def weight(name):
        return weights[name].astype("float64")

    def rms_norm(x, scale):
        variance = np.mean(x**2, axis=-1, keepdims=True)
        return x / np.sqrt(variance + c["layer_norm_epsilon"]) * scale

    inverse_frequencies = c["rope_max_wavelength"] ** (
        -np.arange(0, head_dim, 2) / head_dim
    )
    angles = np.arange(length)[:, None] * inverse_frequencies  # (T, d/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]

    def interleaved_rope(x):  # (T, heads, head_dim)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = np.empty_like(x)
        rotated[..., 0::2] = even * cos - odd * sin
        rotated[..., 1::2] = even * sin + odd * cos
        return rotated

    x = weights["token_embd.weight"][token_ids].astype("float64")
    causal = np.triu(np.full((length, length), -np.inf), k=1)
    for i in range(c["num_layers"]):
        p = f"blk.{i}."
        h = rms_norm(x, weight(p + "attn_norm.weight"))
        q = (h @ weight(p + "attn_q.weight").T).reshape(length, heads, head_dim)
        k = (h @ weight(p + "attn_k.weight").T).reshape(length, kv_heads, head_dim)
        v = (h @ weight(p + "attn_v.weight").T).reshape(length, kv_heads, head_dim)
        q, k = interleaved_rope(q), interleaved_rope(k)
        # Grouped-query attention: query head j reads key-value head j // g.
        k = np.repeat(k, heads // kv_heads, axis=1)
        v = np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + causal
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        attention = np.einsum("hqk,khd->qhd", probs, v).reshape(length, -1)
        x = x + attention @ weight(p + "attn_output.weight").T
        h = rms_norm(x, weight(p + "ffn_norm.weight"))
        gate = h @ weight(p + "ffn_gate.weight").T
        up = h @ weight(p + "ffn_up.weight").T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ weight(p + "ffn_down.weight").T
    x = rms_norm(x, weight("output_norm.weight"))
    head = "output.weight" if "output.weight" in weights else "token_embd.weight"
    return x @ weight(head).T


def keras_logits(causal_lm, token_ids):
    token_ids = np.asarray([token_ids], dtype="int32")
    inputs = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    return np.asarray(causal_lm(inputs), dtype="float64")[0]


@pytest.mark.slow
def test_smollm2_logits_match_a_numpy_forward_pass(smollm2, smollm2_checkpoint):
    tokenizer = smollm2.preprocessor.tokenizer
    weights = dequantized(smollm2_checkpoint)
    for prompt in PROMPTS:
        token_ids = list(tokenizer(prompt))
        want = numpy_llama_logits(smollm2_checkpoint.config, weights, token_ids)
        got = keras_logits(smollm2, token_ids)
        assert got.shape == want.shape == (len(token_ids), 49152)
        # float32 vs float64 through 30 layers, logits within about +-40:
        # measured 7e-5 at most on 2 CPU cores.
        assert np.abs(got - want).max() < 5e-4, prompt
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9999999
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.slow
def test_greedy_continuation_names_paris(smollm2):
    smollm2.compile(sampler="greedy")
    text = smollm2.generate("The capital of France is", max_length=10)
    assert text.startswith("The capital of France is")
    assert "Paris" in text[len("The capital of France is") :]


def test_generate_prompts_get_no_start_token(smollm2):
    # SmolLM2 has no BOS (its GGUF add_bos_token is false).
    preprocessor = smollm2.preprocessor
    assert not preprocessor.add_start_token
    prompt = preprocessor.generate_preprocess(["The capital of France is"])
    tokens = np.asarray(prompt["token_ids"])[0][np.asarray(prompt["padding_mask"])[0]]
    assert tokens.tolist() == list(preprocessor.tokenizer("The capital of France is"))


def test_training_batches_end_with_the_end_token(smollm2):
    x, y, sample_weight = smollm2.preprocessor(["Paris."], sequence_length=8)
    labels = np.asarray(y)[0][np.asarray(sample_weight)[0] > 0]
    assert labels[-1] == smollm2.preprocessor.tokenizer.end_token_id
    assert np.asarray(x["token_ids"]).shape == (1, 8)


def test_tiny_mixed_type_untied_model_matches_numpy(tiny_llama):
    # Grouped-query attention (2 query heads on 1 key-value head), an
    # untied output projection, and Q4_0 / Q4_1 / Q8_0 / F16 / F32 tensors.
    checkpoint = LlamaGGUFFile(tiny_llama())
    causal_lm = load_gguf_causal_lm(checkpoint, sequence_length=16)
    assert not causal_lm.backbone.tie_word_embeddings
    token_ids = [5, 70, 261, 3, 100, 42, 7]
    want = numpy_llama_logits(checkpoint.config, dequantized(checkpoint), token_ids)
    got = keras_logits(causal_lm, token_ids)
    assert np.abs(got - want).max() < 1e-5


def test_bfloat16_compute_stays_close(tiny_llama):
    checkpoint = LlamaGGUFFile(tiny_llama())
    token_ids = [5, 70, 261, 3, 100]
    want = numpy_llama_logits(checkpoint.config, dequantized(checkpoint), token_ids)
    for dtype in ("bfloat16", "mixed_bfloat16"):
        backbone = llama3_backbone_from_gguf(checkpoint, dtype=dtype)
        causal_lm = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
        got = keras_logits(causal_lm, token_ids)
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99, dtype
    assert backbone.get_layer("token_embedding").embeddings.dtype == "float32"


def test_bad_arguments_are_refused(tiny_llama):
    path = tiny_llama()
    with pytest.raises(ValueError, match="Received: dtype='float16'"):
        llama3_backbone_from_gguf(path, dtype="float16")
    with pytest.raises(ValueError, match="Received: sequence_length=129"):
        load_gguf_causal_lm(path, sequence_length=129)  # context length 128


def test_unpermute_inverts_llama_cpp_permutation():
    # llama.cpp's convert_hf_to_gguf.py permutes Hugging Face rows so.
    def permute(w, heads):
        rows = w.shape[0]
        return w.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)

    weight = np.random.default_rng(0).standard_normal((3 * 64, 10))
    np.testing.assert_array_equal(unpermute_rope_rows(permute(weight, 3), 3), weight)
    with pytest.raises(ValueError, match=r"Received: weight.shape=\(9, 10\), num_heads=3"):
        unpermute_rope_rows(weight[:9], 3)


def test_causal_lm_config_round_trip(tiny_llama):
    causal_lm = load_gguf_causal_lm(tiny_llama(), sequence_length=16)
    config = keras.saving.serialize_keras_object(causal_lm.preprocessor)
    assert config["registered_name"] == "keras_ragkd>Llama3CausalLMPreprocessor"
    assert config["config"]["tokenizer"]["registered_name"] == (
        "keras_ragkd>ByteLevelLlama3Tokenizer"
    )
