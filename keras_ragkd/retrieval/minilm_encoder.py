"""`MiniLMEncoder`: the all-MiniLM-L6-v2 embedder as a retrieval encoder."""

import keras

from keras_ragkd.models.minilm import MiniLMEmbedder
from keras_ragkd.retrieval.encoders import encode_in_batches
from keras_ragkd.retrieval.encoders import weights_fingerprint


@keras.saving.register_keras_serializable(package="keras_ragkd")
class MiniLMEncoder(MiniLMEmbedder):
    """all-MiniLM-L6-v2 as an index's encoder: `encode`, `dim` and `identity`.

    A `keras_ragkd.models.MiniLMEmbedder` (raw strings to unit vectors, all
    in the graph) with what `PassageIndex` needs: `encode(texts)` to NumPy
    and an `identity` that names the model, its sequence length and its
    weights, so that an index is never searched with another encoder's
    vectors. Use it as a query tower too; pass the same instance as the
    passage tower to share weights.

    Args: those of `MiniLMEmbedder` (`sequence_length=64`, `preset=None`,
    `keras.Model` arguments such as `trainable`).

    Example:

    >>> from keras_ragkd.retrieval import MiniLMEncoder
    >>> encoder = MiniLMEncoder(sequence_length=32)
    >>> vectors = encoder.encode(["Paris is in France.", "Bern is in Switzerland."])
    >>> vectors.shape
    (2, 384)
    """

    @property
    def identity(self):
        """`"all-MiniLM-L6-v2/seq<L>/<weights hash>"`, stored in manifests."""
        return (
            f"all-MiniLM-L6-v2/seq{self.sequence_length}/"
            f"{weights_fingerprint(self.backbone)}"
        )

    def encode(self, texts, batch_size=64, verbose="auto"):
        """Encodes strings into a float32 `(n, 384)` NumPy array.

        Args:
            texts: list of strings.
            batch_size: texts per forward pass.
            verbose: `"auto"`, 0 or 1 (Keras progress bar).
        """
        return encode_in_batches(self.predict_on_batch, texts, batch_size, verbose)


def load_minilm_encoder(sequence_length=64):
    """Returns a `MiniLMEncoder` (all-MiniLM-L6-v2, offline weights).

    Example:

    >>> from keras_ragkd.retrieval import load_minilm_encoder
    >>> load_minilm_encoder(sequence_length=16).dim
    384
    """
    return MiniLMEncoder(sequence_length=sequence_length)
