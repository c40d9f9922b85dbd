"""GGUF llama weights into a keras-hub `Llama3Backbone`."""

import keras
import keras_hub
import numpy as np

from keras_ragkd.models.gguf_file import LlamaGGUFFile

# "mixed_bfloat16" keeps float32 weights and computes in bfloat16.
SUPPORTED_DTYPES = ("float32", "bfloat16", "mixed_bfloat16")


def unpermute_rope_rows(weight, num_heads):
    """Undoes llama.cpp's row order of a query or key projection.

    llama.cpp rotates adjacent pairs of each head's dimensions (interleaved
    RoPE, as Meta's original Llama code does), so its converter reorders the
    rows of Hugging Face's `q_proj`/`k_proj`, whose RoPE rotates the two
    halves of each head ("rotate half", as keras-hub does). Within a head,
    row `j` of the first half goes to row `2j` and row `j` of the second half
    to row `2j + 1`; this puts them back.

    Args:
        weight: array of shape `(num_heads * head_dim, columns)`, a GGUF
            `attn_q` or `attn_k` weight in NumPy order.
        num_heads: int. Query heads for `attn_q`, key-value heads for
            `attn_k`.

    Returns:
        An array of the same shape with the Hugging Face row order.

    Example:

    >>> import numpy as np
    >>> rows = np.arange(8.0)[:, None]  # one head of 8 dims, llama.cpp order
    >>> unpermute_rope_rows(rows, num_heads=1)[:, 0]
    array([0., 2., 4., 6., 1., 3., 5., 7.])
    """
    weight = np.asarray(weight)
    rows = weight.shape[0]
    if weight.ndim != 2 or rows % (2 * num_heads):
        raise ValueError(
            "`weight` must be a 2-D array whose rows split into `num_heads` "
            "heads of an even size. Received: "
            f"weight.shape={weight.shape}, num_heads={num_heads}"
        )
    cols = weight.shape[1]
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, cols)
        .swapaxes(1, 2)
        .reshape(rows, cols)
    )


def llama3_backbone_from_gguf(checkpoint, dtype="float32"):
    """Builds a `keras_hub.models.Llama3Backbone` holding a GGUF file's weights.

    Quantized tensors (Q4_1, Q8_0, ...) are dequantized to float32 and mapped
    as keras-hub's own Hugging Face converter (`convert_llama3.py`) maps
    `model.safetensors`, after `unpermute_rope_rows` on the q/k projections.
    The backbone is then an ordinary Keras model: trainable, LoRA-ready
    (`backbone.enable_lora(rank)`), savable.

    Args:
        checkpoint: a `LlamaGGUFFile`, or the path of a `.gguf` file.
        dtype: str. `"float32"` (default), `"bfloat16"` (weights and compute),
            or `"mixed_bfloat16"` (float32 weights, bfloat16 compute).

    Returns:
        A `keras_hub.models.Llama3Backbone`.

    Example:

    >>> from keras_ragkd.models import llama3_backbone_from_gguf
    >>> from keras_ragkd.models import smollm2_gguf_path
    >>> backbone = llama3_backbone_from_gguf(smollm2_gguf_path())
    >>> backbone.num_layers, backbone.hidden_dim
    (30, 576)
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"`dtype` must be one of {list(SUPPORTED_DTYPES)}. "
            f"Received: dtype={dtype!r}"
        )
    if not isinstance(checkpoint, LlamaGGUFFile):
        checkpoint = LlamaGGUFFile(checkpoint)
    config = checkpoint.config
    backbone = keras_hub.models.Llama3Backbone(**config, dtype=dtype)

    def assign(variable, value):
        value = np.reshape(value, variable.shape)
        variable.assign(keras.ops.cast(value, variable.dtype))

    embedding = backbone.get_layer("token_embedding")
    assign(embedding.embeddings, checkpoint.tensor("token_embd.weight"))
    if not config["tie_word_embeddings"]:
        assign(
            embedding.reverse_embeddings, checkpoint.tensor("output.weight").T
        )
    for i in range(config["num_layers"]):
        layer = backbone.get_layer(f"transformer_layer_{i}")
        attention = layer._self_attention_layer

        def weight(name, i=i):
            return checkpoint.tensor(f"blk.{i}.{name}.weight")

        assign(layer._self_attention_layernorm.scale, weight("attn_norm"))
        assign(layer._feedforward_layernorm.scale, weight("ffn_norm"))
        # Kernels are (in, heads, head_dim) / (heads, head_dim, out): the
        # transposed (out, in) matrix, reshaped.
        query = unpermute_rope_rows(weight("attn_q"), config["num_query_heads"])
        key = unpermute_rope_rows(weight("attn_k"), config["num_key_value_heads"])
        assign(attention._query_dense.kernel, query.T)
        assign(attention._key_dense.kernel, key.T)
        assign(attention._value_dense.kernel, weight("attn_v").T)
        assign(attention._output_dense.kernel, weight("attn_output").T)
        assign(layer._feedforward_gate_dense.kernel, weight("ffn_gate").T)
        assign(layer._feedforward_intermediate_dense.kernel, weight("ffn_up").T)
        assign(layer._feedforward_output_dense.kernel, weight("ffn_down").T)
    assign(
        backbone.get_layer("sequence_output_layernorm").scale,
        checkpoint.tensor("output_norm.weight"),
    )
    return backbone
