"""A llama-family GGUF checkpoint, read and validated without running its code."""

import os
import struct

import gguf
import numpy as np
from gguf.quants import dequantize

from keras_ragkd.validation import is_integer

GGUF_MAGIC = b"GGUF"

# Tensor types whose float32 dequantization `gguf.quants.dequantize` does in
# NumPy and that the tests here exercise. K-quants and i-quants are refused.
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")

# llama.cpp pre-tokenizer names (`tokenizer.ggml.pre`) that are the GPT-2
# byte-level split, mapped to whether digits are split off one by one first
# (llama.cpp's `\p{N}` pass; Hugging Face's `Digits(individual_digits=True)`).
BYTE_LEVEL_PRE_TOKENIZERS = {
    "gpt-2": False,
    "smollm": True,
    "starcoder": True,
    "refact": True,
}

# Per-layer tensors of a llama block, in llama.cpp's names.
LAYER_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)

# Errors NumPy and `struct` raise from `gguf.GGUFReader` on a short or
# corrupt file (a reshape of too few bytes, an out-of-range read).
_READ_ERRORS = (
    ValueError,
    IndexError,
    KeyError,
    OverflowError,
    TypeError,
    UnicodeDecodeError,
    struct.error,
)


def _float32_value(value):
    """The shortest decimal that rounds to the same float32 (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


class LlamaGGUFFile:
    """A llama-family GGUF file: hyperparameters, tokenizer and float32 weights.

    GGUF is llama.cpp's checkpoint format: a header of typed metadata
    (`general.architecture`, `llama.block_count`, `tokenizer.ggml.tokens`, ...)
    followed by (often quantized) tensors. The file is parsed as data with
    `gguf.GGUFReader`; nothing in it is executed (its Jinja chat template is
    kept as a string, never rendered).

    Opening validates everything the keras-hub mapping needs, so that a bad
    file fails here, with its name, rather than deep inside Keras: the magic
    number and completeness (a truncated download), the architecture
    (`llama`), the hyperparameters, the tokenizer (GPT-2 byte-level BPE), and
    every tensor's presence, shape and type (`SUPPORTED_TENSOR_TYPES`).

    Args:
        path: str or `os.PathLike`. The `.gguf` file.

    Attributes:
        path: str. The file.
        config: dict. `keras_hub.models.Llama3Backbone` arguments
            (`vocabulary_size`, `num_layers`, `num_query_heads`,
            `num_key_value_heads`, `hidden_dim`, `intermediate_dim`,
            `rope_max_wavelength`, `layer_norm_epsilon`,
            `tie_word_embeddings`).
        context_length: int. The longest sequence the model was trained on.
        tokens: list of str. The vocabulary, in id order (byte-level
            unicode, as in a Hugging Face `vocab.json`).
        merges: list of str. BPE merge rules, `"a b"`, in rank order.
        special_tokens: list of str. The control tokens (`<|im_start|>`, ...),
            which are matched whole in text, never split.
        bos_token_id, eos_token_id: int or `None`.
        add_bos_token: bool. Whether llama.cpp prepends the BOS token.
        individual_digits: bool. Whether the pre-tokenizer splits every digit
            off on its own (`tokenizer.ggml.pre` such as `"smollm"`).
        chat_template: str or `None`. The Jinja template, as text.
        metadata: dict. Every scalar or string metadata value by key (arrays
            such as the vocabulary left out).

    Example:

    >>> from keras_ragkd.models import LlamaGGUFFile, smollm2_gguf_path
    >>> checkpoint = LlamaGGUFFile(smollm2_gguf_path())
    >>> checkpoint.config["num_layers"], checkpoint.config["hidden_dim"]
    (30, 576)
    >>> checkpoint.tensor("blk.0.attn_k.weight").shape
    (192, 576)
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"No GGUF file at this path. Received: path={self.path!r}"
            )
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ValueError(
                f"'{self.path}' is not a GGUF file: it must start with the "
                f"bytes {GGUF_MAGIC!r}. Received: magic={magic!r}"
            )
        size = os.path.getsize(self.path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        except _READ_ERRORS as error:
            raise ValueError(
                f"'{self.path}' is not a complete GGUF file (truncated or "
                f"corrupt; the reader said: {error}). Received: "
                f"file_size={size}"
            ) from error
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        end = max(
            (t.data_offset + t.n_bytes for t in self._reader.tensors), default=0
        )
        if end > size:
            raise ValueError(
                f"'{self.path}' is truncated: its tensors need {end} bytes. "
                f"Received: file_size={size}"
            )
        self.metadata = {
            key: field.contents()
            for key, field in self._reader.fields.items()
            if field.types and field.types[0] != gguf.GGUFValueType.ARRAY
        }
        self._read_config()
        self._read_tokenizer()
        self._check_tensors()

    # --- metadata -----------------------------------------------------------

    def _value(self, key, default=KeyError):
        if key in self.metadata:
            return self.metadata[key]
        if key in self._reader.fields:
            # E.g. a per-layer head count: a layout keras-hub cannot build.
            raise ValueError(
                f"'{self.path}': `{key}` must be a single value, not an "
                f"array. Received: {key}={self._reader.fields[key].contents()!r}"
            )
        if default is KeyError:
            raise ValueError(
                f"'{self.path}' lacks the metadata key `{key}`. Received: "
                f"keys={sorted(self.metadata)}"
            )
        return default

    def _array(self, key):
        field = self._reader.fields.get(key)
        if field is None:
            raise ValueError(
                f"'{self.path}' lacks the metadata array `{key}`. Received: "
                f"{key}=None"
            )
        return field.contents()

    def _read_config(self):
        architecture = self._value("general.architecture")
        if architecture != "llama":
            raise ValueError(
                f"'{self.path}' holds a `{architecture}` model; only the "
                "`llama` architecture (Llama, SmolLM2, TinyLlama, ...) maps "
                f"to keras-hub's Llama3Backbone. Received: "
                f"general.architecture={architecture!r}"
            )
        if self._reader.byte_order != "I":
            raise ValueError(
                f"'{self.path}' was written for the other byte order. "
                f"Received: byte_order={self._reader.byte_order!r}"
            )
        unsupported = {
            "llama.expert_count": 0,
            "llama.rope.scaling.type": "none",
        }
        for key, neutral in unsupported.items():
            value = self.metadata.get(key, neutral)
            if value not in (neutral, None):
                raise ValueError(
                    f"'{self.path}' uses `{key}`, which this loader does not "
                    f"map. Received: {key}={value!r}"
                )
        if "rope_freqs.weight" in self._tensors:
            raise ValueError(
                f"'{self.path}' carries per-frequency RoPE factors (Llama 3.1 "
                "style scaling), which this loader does not map. Received: "
                "tensor=rope_freqs.weight"
            )

        def positive_int(key, default=KeyError):
            value = self._value(key, default)
            if not is_integer(value):
                raise ValueError(
                    f"'{self.path}': `{key}` must be a positive integer. "
                    f"Received: {key}={value!r}"
                )
            return value

        num_layers = positive_int("llama.block_count")
        hidden_dim = positive_int("llama.embedding_length")
        num_query_heads = positive_int("llama.attention.head_count")
        num_key_value_heads = positive_int(
            "llama.attention.head_count_kv", num_query_heads
        )
        if hidden_dim % num_query_heads or num_query_heads % num_key_value_heads:
            raise ValueError(
                f"'{self.path}': the hidden size must split into query heads "
                "and the query heads into key-value groups. Received: "
                f"embedding_length={hidden_dim}, head_count={num_query_heads}, "
                f"head_count_kv={num_key_value_heads}"
            )
        head_dim = hidden_dim // num_query_heads
        rope_dims = positive_int("llama.rope.dimension_count", head_dim)
        if rope_dims != head_dim:
            raise ValueError(
                f"'{self.path}' applies RoPE to {rope_dims} of {head_dim} "
                "head dimensions; keras-hub rotates them all. Received: "
                f"llama.rope.dimension_count={rope_dims}"
            )
        tokens_field = self._reader.fields.get("tokenizer.ggml.tokens")
        num_tokens = len(tokens_field.data) if tokens_field else None
        vocabulary_size = positive_int(
            "llama.vocab_size", num_tokens if num_tokens else KeyError
        )
        self.context_length = positive_int("llama.context_length")
        self.config = {
            "vocabulary_size": vocabulary_size,
            "num_layers": num_layers,
            "num_query_heads": num_query_heads,
            "hidden_dim": hidden_dim,
            "intermediate_dim": positive_int("llama.feed_forward_length"),
            "num_key_value_heads": num_key_value_heads,
            # Stored as float32: 1e-5 reads back as 9.99999974738e-06.
            "rope_max_wavelength": _float32_value(
                self._value("llama.rope.freq_base", 10000.0)
            ),
            "layer_norm_epsilon": _float32_value(
                self._value("llama.attention.layer_norm_rms_epsilon")
            ),
            "tie_word_embeddings": "output.weight" not in self._tensors,
        }
        for key in ("rope_max_wavelength", "layer_norm_epsilon"):
            value = self.config[key]
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"'{self.path}': `{key}` must be a positive number. "
                    f"Received: {key}={value!r}"
                )

    def _read_tokenizer(self):
        model = self._value("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(
                f"'{self.path}' has a `{model}` tokenizer; only GPT-2 style "
                "byte-level BPE maps to keras-hub's Llama3Tokenizer. "
                f"Received: tokenizer.ggml.model={model!r}"
            )
        pre = self._value("tokenizer.ggml.pre", "gpt-2")
        if pre not in BYTE_LEVEL_PRE_TOKENIZERS:
            raise ValueError(
                f"'{self.path}' uses the `{pre}` pre-tokenizer; supported: "
                f"{sorted(BYTE_LEVEL_PRE_TOKENIZERS)}. Received: "
                f"tokenizer.ggml.pre={pre!r}"
            )
        self.individual_digits = BYTE_LEVEL_PRE_TOKENIZERS[pre]
        self.tokens = self._array("tokenizer.ggml.tokens")
        self.merges = self._array("tokenizer.ggml.merges")
        if len(self.tokens) != self.config["vocabulary_size"]:
            raise ValueError(
                f"'{self.path}': the vocabulary has {len(self.tokens)} tokens "
                "but the model "
                f"{self.config['vocabulary_size']} embeddings. Received: "
                f"llama.vocab_size={self.config['vocabulary_size']}"
            )
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(
                f"'{self.path}': the vocabulary repeats tokens. Received: "
                f"unique_tokens={len(set(self.tokens))} of {len(self.tokens)}"
            )
        # llama.cpp's token types: 3 = control, 4 = user-defined; both are
        # matched whole in text ("special" added tokens in Hugging Face).
        field = self._reader.fields.get("tokenizer.ggml.token_type")
        types = field.contents() if field else [1] * len(self.tokens)
        self.special_tokens = [
            token for token, kind in zip(self.tokens, types) if kind in (3, 4)
        ]
        self.bos_token_id = self.metadata.get("tokenizer.ggml.bos_token_id")
        self.eos_token_id = self.metadata.get("tokenizer.ggml.eos_token_id")
        for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            value = self.metadata.get(key)
            if value is not None and not 0 <= value < len(self.tokens):
                raise ValueError(
                    f"'{self.path}': `{key}` is outside the vocabulary. "
                    f"Received: {key}={value}"
                )
        self.add_bos_token = bool(self.metadata.get("tokenizer.ggml.add_bos_token", False))
        self.chat_template = self.metadata.get("tokenizer.chat_template")

    # --- tensors ------------------------------------------------------------

    def expected_shapes(self):
        """Returns `{tensor name: NumPy shape}` for every tensor the model needs.

        Shapes are in NumPy order, `(rows, columns)` = `(out, in)` features,
        the Hugging Face `nn.Linear` layout (GGUF lists dimensions reversed).
        """
        c = self.config
        head_dim = c["hidden_dim"] // c["num_query_heads"]
        q_rows = c["num_query_heads"] * head_dim
        kv_rows = c["num_key_value_heads"] * head_dim
        shapes = {
            "token_embd.weight": (c["vocabulary_size"], c["hidden_dim"]),
            "output_norm.weight": (c["hidden_dim"],),
        }
        if not c["tie_word_embeddings"]:
            shapes["output.weight"] = (c["vocabulary_size"], c["hidden_dim"])
        layer = {
            "attn_norm": (c["hidden_dim"],),
            "attn_q": (q_rows, c["hidden_dim"]),
            "attn_k": (kv_rows, c["hidden_dim"]),
            "attn_v": (kv_rows, c["hidden_dim"]),
            "attn_output": (c["hidden_dim"], q_rows),
            "ffn_norm": (c["hidden_dim"],),
            "ffn_gate": (c["intermediate_dim"], c["hidden_dim"]),
            "ffn_up": (c["intermediate_dim"], c["hidden_dim"]),
            "ffn_down": (c["hidden_dim"], c["intermediate_dim"]),
        }
        for i in range(c["num_layers"]):
            for name in LAYER_TENSORS:
                shapes[f"blk.{i}.{name}.weight"] = layer[name]
        return shapes

    def _check_tensors(self):
        expected = self.expected_shapes()
        missing = [name for name in expected if name not in self._tensors]
        if missing:
            shown = missing[:5] + (["..."] if len(missing) > 5 else [])
            raise ValueError(
                f"'{self.path}' lacks {len(missing)} of the model's "
                f"{len(expected)} tensors. Received: missing={shown}"
            )
        for name, shape in expected.items():
            tensor = self._tensors[name]
            kind = tensor.tensor_type.name
            if kind not in SUPPORTED_TENSOR_TYPES:
                raise ValueError(
                    f"'{self.path}': tensor `{name}` is stored as {kind}; "
                    f"supported types: {list(SUPPORTED_TENSOR_TYPES)}. "
                    f"Received: tensor_type={kind}"
                )
            found = self._numpy_shape(tensor)
            if found != shape:
                raise ValueError(
                    f"'{self.path}': tensor `{name}` should have shape {shape} "
                    f"from the metadata. Received: shape={found}"
                )

    @staticmethod
    def _numpy_shape(tensor):
        return tuple(int(d) for d in reversed(tensor.shape.tolist()))

    @property
    def tensor_names(self):
        """The names of all tensors in the file, in file order."""
        return list(self._tensors)

    def tensor_type(self, name):
        """Returns the storage type of a tensor as a string, e.g. `"Q4_1"`."""
        return self._get_tensor(name).tensor_type.name

    def _get_tensor(self, name):
        if name not in self._tensors:
            raise ValueError(
                f"'{self.path}' has no tensor `{name}`. Received: name={name!r}"
            )
        return self._tensors[name]

    def tensor(self, name):
        """Returns a tensor dequantized to a float32 NumPy array.

        Args:
            name: str. A llama.cpp tensor name such as `"blk.0.attn_q.weight"`.

        Returns:
            A new float32 `np.ndarray` in NumPy order `(rows, columns)`; q/k
            projections still in llama.cpp's interleaved-RoPE row order.
        """
        tensor = self._get_tensor(name)
        kind = tensor.tensor_type.name
        if kind not in SUPPORTED_TENSOR_TYPES:
            raise ValueError(
                f"'{self.path}': tensor `{name}` is stored as {kind}; "
                f"supported types: {list(SUPPORTED_TENSOR_TYPES)}. "
                f"Received: tensor_type={kind}"
            )
        values = dequantize(tensor.data, tensor.tensor_type)
        return np.array(values, dtype="float32").reshape(self._numpy_shape(tensor))

    def __repr__(self):
        c = self.config
        return (
            f"<LlamaGGUFFile {os.path.basename(self.path)!r}: {c['num_layers']} "
            f"layers, hidden {c['hidden_dim']}, {c['num_query_heads']}/"
            f"{c['num_key_value_heads']} heads, vocabulary "
            f"{c['vocabulary_size']}>"
        )
