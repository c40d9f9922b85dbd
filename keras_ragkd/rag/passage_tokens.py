"""`PassageTokenTable`: the generator's token ids of every passage of an index."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_ragkd")
class PassageTokenTable(keras.layers.Layer):
    """The generator's token ids of every index passage, gathered by row.

    A retriever returns passage rows; the generator reads tokens. This layer
    holds one row of token ids per index passage in an int32 non-trainable
    weight `(num_passages, length)` and maps retrieved rows `(batch, k)` to
    their tokens `(batch, k, length)` in the graph (so it runs under XLA and
    in exported SavedModels). It belongs to the RAG side: the ids come from
    the RAG preprocessor's tokenizer (`from_index`), and a model answering
    from another index gets a new table.

    The ids are saved with the model's weights, not in its config.

    Args:
        token_ids: int array `(num_passages, length)`, the token ids of each
            index row; or `None` with `num_passages` and `length` (zeros, to
            be loaded, as `from_config` does).
        num_passages: int, rows of the table; only used without `token_ids`.
        length: int, tokens per passage; only used without `token_ids`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> table = PassageTokenTable([[5, 6], [7, 0], [8, 9]])
    >>> table(np.array([[2, 0]])).numpy().tolist()
    [[[8, 9], [5, 6]]]
    """

    def __init__(self, token_ids=None, num_passages=None, length=None, **kwargs):
        super().__init__(**kwargs)
        if token_ids is not None:
            token_ids = check_passage_token_ids(token_ids)
            num_passages, length = token_ids.shape
        elif num_passages is None or length is None:
            raise ValueError(
                "Expected `token_ids`, or both `num_passages` and `length`. Received: "
                f"token_ids=None, num_passages={num_passages!r}, length={length!r}"
            )
        self.token_ids = self.add_weight(
            shape=(int(num_passages), int(length)),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="token_ids",
        )
        if token_ids is not None:
            self.token_ids.assign(token_ids)
        self.built = True

    @classmethod
    def from_index(cls, index, preprocessor, **kwargs):
        """A table of `preprocessor.tokenize_passages` of every passage of `index`.

        Args:
            index: a `PassageIndex`.
            preprocessor: the RAG preprocessor whose ids the generator reads
                (a `RagPreprocessor` or `CausalLMRagPreprocessor`).
            **kwargs: `PassageTokenTable` arguments (e.g. `name`).
        """
        texts = [passage.text for passage in index.passages]
        return cls(preprocessor.tokenize_passages(texts), **kwargs)

    @property
    def num_passages(self):
        return int(self.token_ids.shape[0])

    @property
    def length(self):
        return int(self.token_ids.shape[1])

    def call(self, rows):
        """int32 `(..., length)`: the token ids of `rows` (int, any shape)."""
        return tf.gather(tf.convert_to_tensor(self.token_ids), tf.cast(rows, "int32"))

    def compute_output_spec(self, rows):
        return keras.KerasTensor(tuple(rows.shape) + (self.length,), "int32")

    def get_config(self):
        config = super().get_config()
        config.update({"num_passages": self.num_passages, "length": self.length})
        return config


def check_passage_token_ids(token_ids, num_passages=None):
    """`token_ids` as an int32 NumPy array `(num_passages, length)`.

    Raises:
        ValueError: for other ranks, non-integer ids, or another number of
            rows than `num_passages` (when given).
    """
    if keras.ops.is_tensor(token_ids):
        token_ids = keras.ops.convert_to_numpy(token_ids)
    token_ids = np.asarray(token_ids)
    if (
        token_ids.ndim != 2
        or token_ids.dtype.kind not in "iu"
        or num_passages is not None and token_ids.shape[0] != num_passages
    ):
        rows = "num_passages" if num_passages is None else f"num_passages={num_passages}"
        raise ValueError(
            f"Expected `passage_token_ids` to be an integer array ({rows}, length). "
            f"Received: passage_token_ids.shape={token_ids.shape}, dtype={token_ids.dtype}"
        )
    return token_ids.astype(np.int32)
