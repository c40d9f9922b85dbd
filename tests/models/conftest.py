"""The real SmolLM2 GGUF file, and tiny llama GGUF files written with `gguf`."""

import gguf
import numpy as np
import pytest

from keras_ragkd.models import LlamaGGUFFile
from keras_ragkd.models import load_smollm2
from keras_ragkd.models import smollm2_gguf_path


@pytest.fixture(scope="session")
def smollm2_checkpoint():
    """SmolLM2-135M-Instruct's GGUF file, read and validated once."""
    return LlamaGGUFFile(smollm2_gguf_path())


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a keras-hub Llama3CausalLM (float32), loaded once."""
    return load_smollm2(sequence_length=64)


def _byte_level_alphabet():
    """GPT-2's 256 printable stand-ins for bytes, in byte order."""
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


TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he"]
TINY_TOKENS = TINY_SPECIAL_TOKENS + _byte_level_alphabet() + ["Ġt", "he", "Ġthe"]
# Hidden 64 and FFN 96 are multiples of the 32-value quantization blocks.
TINY_CONFIG = dict(layers=2, hidden=64, heads=2, kv_heads=1, ffn=96)
# One llama.cpp storage type per tensor kind, to exercise them all.
TINY_TYPES = {
    "token_embd": "Q8_0",
    "output": "Q8_0",
    "attn_q": "Q4_1",
    "attn_k": "Q4_0",
    "attn_v": "F16",
    "attn_output": "Q4_1",
    "ffn_gate": "Q4_1",
    "ffn_up": "Q8_0",
    "ffn_down": "Q4_0",
}


def write_tiny_llama(
    path,
    architecture="llama",
    types=None,
    omit=(),
    untied=True,
    metadata=None,
    pre="smollm",
    seed=0,
):
    """Writes a 2-layer llama GGUF file with random weights; returns `path`.

    Args:
        path: where to write.
        architecture: `general.architecture`.
        types: `{tensor kind: GGML type name}` overriding `TINY_TYPES`
            (norms are always F32 unless named here).
        omit: tensor names to leave out.
        untied: write a separate `output.weight`.
        metadata: `{key: value}` of extra string/int/float metadata.
        pre: `tokenizer.ggml.pre`.
        seed: NumPy seed of the weights.
    """
    c = TINY_CONFIG
    head_dim = c["hidden"] // c["heads"]
    rng = np.random.default_rng(seed)
    kinds = dict(TINY_TYPES, **(types or {}))
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(c["layers"])
    writer.add_context_length(128)
    writer.add_embedding_length(c["hidden"])
    writer.add_feed_forward_length(c["ffn"])
    writer.add_head_count(c["heads"])
    writer.add_head_count_kv(c["kv_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(TINY_TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(TINY_TOKENS)
    writer.add_token_types([3] * len(TINY_SPECIAL_TOKENS) + [1] * (len(TINY_TOKENS) - 3))
    writer.add_token_merges(TINY_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)

    shapes = {
        "token_embd.weight": (len(TINY_TOKENS), c["hidden"]),
        "output_norm.weight": (c["hidden"],),
    }
    if untied:
        shapes["output.weight"] = (len(TINY_TOKENS), c["hidden"])
    for i in range(c["layers"]):
        shapes.update(
            {
                f"blk.{i}.attn_norm.weight": (c["hidden"],),
                f"blk.{i}.attn_q.weight": (c["heads"] * head_dim, c["hidden"]),
                f"blk.{i}.attn_k.weight": (c["kv_heads"] * head_dim, c["hidden"]),
                f"blk.{i}.attn_v.weight": (c["kv_heads"] * head_dim, c["hidden"]),
                f"blk.{i}.attn_output.weight": (c["hidden"], c["heads"] * head_dim),
                f"blk.{i}.ffn_norm.weight": (c["hidden"],),
                f"blk.{i}.ffn_gate.weight": (c["ffn"], c["hidden"]),
                f"blk.{i}.ffn_up.weight": (c["ffn"], c["hidden"]),
                f"blk.{i}.ffn_down.weight": (c["hidden"], c["ffn"]),
            }
        )
    for name, shape in shapes.items():
        if name in omit:
            continue
        kind = name.split(".")[-2]
        if len(shape) == 1:
            values = (1.0 + 0.1 * rng.standard_normal(shape)).astype("float32")
        else:
            scale = 1.0 if kind == "token_embd" else 0.5 / np.sqrt(shape[1])
            values = (scale * rng.standard_normal(shape)).astype("float32")
        qtype = gguf.GGMLQuantizationType[kinds.get(kind, "F32")]
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, values.astype("float16"))
        else:
            writer.add_tensor(
                name, gguf.quants.quantize(values, qtype), raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_llama(tmp_path):
    """A factory: `tiny_llama(name="tiny.gguf", **write_tiny_llama kwargs)`."""

    def make(name="tiny.gguf", **kwargs):
        return write_tiny_llama(tmp_path / name, **kwargs)

    return make
