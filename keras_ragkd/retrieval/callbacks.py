"""`PassageReindexer`: keeps the index in step with a passage encoder in training."""

import keras

from keras_ragkd.retrieval.retriever import PassageRetriever
from keras_ragkd.validation import is_integer


@keras.saving.register_keras_serializable(package="keras_ragkd")
class PassageReindexer(keras.callbacks.Callback):
    """Re-encodes the passages and rebuilds the index every N steps or epochs.

    For end-to-end retriever training: when the passage encoder is trained
    (or shares weights with a trained query encoder), the stored passage
    embeddings go stale. This callback calls `index.rebuild(passage_encoder)`
    and then refreshes every retriever in place (the `"faiss"` backend sees
    the new index at once; `"tensor"` weights are re-assigned).

    Args:
        retrievers: a `PassageRetriever` or a list of them sharing one index.
        passage_encoder: encoder used to re-encode passages (e.g. the
            `MiniLMEncoder` being trained).
        every_n_epochs: int or None; rebuild at the end of every N-th epoch.
        every_n_steps: int or None; rebuild after every N-th training batch.
        batch_size: passages per encoder call while re-encoding.
        verbose: 0 or 1; print a line at each rebuild.

    Example (`RagQuestionAnswerer.fit` adds one by itself when the query
    encoder trains):

    >>> import keras, numpy as np
    >>> from keras_ragkd.retrieval import PassageIndex, PassageRetriever, TfidfEncoder
    >>> texts = ["Paris is in France", "Lima is in Peru", "Rome is in Italy"]
    >>> encoder = TfidfEncoder(dim=2).fit(texts)
    >>> index = PassageIndex.build([{"id": t, "text": t} for t in texts], encoder, verbose=0)
    >>> reindexer = PassageReindexer(PassageRetriever(index, k=2), encoder, every_n_epochs=1)
    >>> reindexer.reindex()  # what it does after each epoch of `model.fit`
    >>> reindexer.rebuilds
    1
    """

    def __init__(
        self,
        retrievers,
        passage_encoder,
        every_n_epochs=1,
        every_n_steps=None,
        batch_size=64,
        verbose=0,
    ):
        super().__init__()
        if isinstance(retrievers, PassageRetriever):
            retrievers = [retrievers]
        retrievers = list(retrievers)
        if not retrievers or not all(
            isinstance(r, PassageRetriever) for r in retrievers
        ):
            raise TypeError(
                "Expected a `PassageRetriever` or a non-empty list of them. "
                f"Received: retrievers={retrievers!r}"
            )
        if len({id(r.index) for r in retrievers}) != 1:
            raise ValueError(
                "All retrievers given to one PassageReindexer must share one "
                f"index. Received: {len({id(r.index) for r in retrievers})} indexes"
            )
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("every_n_steps", every_n_steps),
        ):
            if value is not None and not is_integer(value):
                raise ValueError(
                    f"`{name}` must be a positive integer or None. "
                    f"Received: {name}={value!r}"
                )
        if every_n_epochs is None and every_n_steps is None:
            raise ValueError(
                "Set `every_n_epochs` or `every_n_steps`. Received: "
                "every_n_epochs=None, every_n_steps=None"
            )
        self.retrievers = retrievers
        self.passage_encoder = passage_encoder
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.verbose = verbose
        self.rebuilds = 0
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.every_n_steps and self._steps % self.every_n_steps == 0:
            self.reindex()

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.reindex()

    def get_config(self):
        """Scalar settings; retrievers and encoder are live objects, not config."""
        return {
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
            "batch_size": self.batch_size,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config, retrievers=None, passage_encoder=None):
        """Recreates the callback; pass the live `retrievers` and encoder."""
        if retrievers is None or passage_encoder is None:
            raise ValueError(
                "PassageReindexer.from_config needs the live `retrievers` and "
                "`passage_encoder`. Received: "
                f"retrievers={retrievers!r}, passage_encoder={passage_encoder!r}"
            )
        return cls(retrievers, passage_encoder, **config)

    def reindex(self):
        """Re-encodes all passages now and updates the retrievers in place."""
        index = self.retrievers[0].index
        index.rebuild(self.passage_encoder, self.batch_size)
        for retriever in self.retrievers:
            retriever.refresh()
        self.rebuilds += 1
        if self.verbose:
            keras.utils.io_utils.print_msg(
                f"PassageReindexer: rebuilt index of {len(index)} passages "
                f"(rebuild {self.rebuilds})"
            )
