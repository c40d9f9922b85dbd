"""How a saved index remembers its encoder, so that it can encode strings again.

`PassageIndex.save` stores an encoder record in the manifest,
`{"class_name", "config"}`, plus, for encoders with fitted state, plain files
in the index's data folder (checksummed like the others, never pickled):

- `MiniLMEncoder`: `{"sequence_length", "preset"}`; the pretrained weights
  come from their package. The rebuilt encoder must have the recorded
  `encoder_identity` (a fine-tuned MiniLM has another one and is refused).
- `TfidfEncoder`: `{"dim", "ngram_range", "seed", "vocabulary_size"}`, with
  its vocabulary in `tfidf_encoder.json` and IDF weights and SVD components
  in `tfidf_encoder.npz` (`allow_pickle=False`).

Other encoders (a `KerasTextEncoder`, your own) record nothing: pass them to
`PassageIndex.load(directory, encoder=...)`.
"""

import os

from keras_ragkd.retrieval.minilm_encoder import MiniLMEncoder
from keras_ragkd.retrieval.tfidf_encoder import ARRAYS_FILE
from keras_ragkd.retrieval.tfidf_encoder import CONFIG_FILE
from keras_ragkd.retrieval.tfidf_encoder import TfidfEncoder
from keras_ragkd.retrieval.tfidf_query_encoder import TfidfQueryEncoder
from keras_ragkd.validation import is_integer

MINILM = "MiniLMEncoder"
TFIDF = "TfidfEncoder"
ENCODER_FILES = {MINILM: (), TFIDF: (CONFIG_FILE, ARRAYS_FILE)}
ENCODER_NAMES = {"minilm": MINILM, "tfidf": TFIDF}


def encoder_record(encoder):
    """The manifest record of `encoder`, or None if it cannot be rebuilt from one.

    Example:

    >>> from keras_ragkd.retrieval import TfidfEncoder
    >>> texts = ["Paris is in France", "Rome is in Italy", "Bern is in Switzerland"]
    >>> encoder_record(TfidfEncoder(dim=2, ngram_range=(1, 1)).fit(texts))["class_name"]
    'TfidfEncoder'
    """
    if isinstance(encoder, MiniLMEncoder):
        config = {"sequence_length": encoder.sequence_length, "preset": encoder.preset}
        return {"class_name": MINILM, "config": config}
    if isinstance(encoder, TfidfEncoder) and encoder.components is not None:
        config = {
            "dim": encoder.dim,
            "ngram_range": list(encoder.ngram_range),
            "seed": encoder.seed,
            "vocabulary_size": len(encoder.vocabulary),
        }
        return {"class_name": TFIDF, "config": config}
    return None


def write_encoder_files(encoder, record, folder):
    """Writes the encoder's fitted state into `folder`; returns the file names."""
    if record is not None and record["class_name"] == TFIDF:
        encoder.write_files(folder)
    return list(ENCODER_FILES[record["class_name"]]) if record else []


def check_encoder_record(record, manifest_path):
    """Raises `ValueError` unless `record` is None or a well-formed record."""
    if record is None:
        return
    config = record.get("config") if isinstance(record, dict) else None
    valid = isinstance(config, dict) and record.get("class_name") in ENCODER_FILES
    if valid and record["class_name"] == MINILM:
        length = config.get("sequence_length")
        preset = config.get("preset")
        valid = is_integer(length, minimum=3) and (preset is None or isinstance(preset, str))
    if not valid:
        raise ValueError(
            "The index manifest's `encoder` must be null or "
            '{"class_name": "MiniLMEncoder" | "TfidfEncoder", "config": {...}}. '
            f"Received: encoder={record!r:.200} in {manifest_path!r}"
        )


def read_encoder(record, folder, identity, dim):
    """Restores a recorded encoder.

    Returns:
        `(encoder, factory)`: a TF-IDF encoder is read (and checked) at once
        and returned as `encoder`; a MiniLM encoder, whose weights are large,
        is returned as a `factory()` that builds and checks it on first use.
        `(None, None)` when nothing is recorded.
    """
    if record is None:
        return None, None
    if record["class_name"] == TFIDF:
        encoder = TfidfEncoder.load(folder)
        check_restored(encoder, identity, dim, folder)
        return encoder, None
    config = record["config"]

    def build_minilm():
        encoder = MiniLMEncoder(
            sequence_length=config["sequence_length"], preset=config.get("preset"),
            trainable=False,
        )
        check_restored(encoder, identity, dim, os.path.dirname(folder))
        return encoder

    return None, build_minilm


def check_restored(encoder, identity, dim, where):
    if encoder.dim != dim or encoder.identity != identity:
        raise ValueError(
            f"The encoder recorded by the index in {where!r} does not rebuild "
            f"into the one its embeddings came from ({identity!r}, dim {dim}); "
            "for a fine-tuned encoder pass it as "
            "`PassageIndex.load(directory, encoder=...)`. Received: "
            f"encoder.identity={encoder.identity!r}, encoder.dim={encoder.dim}"
        )


def keras_query_encoder(encoder):
    """A Keras layer on raw strings that computes `encoder`'s vectors in the graph.

    The query encoder of a RAG model over an index built with `encoder`
    (`MiniLMEncoder`: itself; `TfidfEncoder`: a `TfidfQueryEncoder`; a
    Keras layer: itself). The layer's `identity` (where it has one) equals
    the encoder's, which is what an index checks.

    Example:

    >>> from keras_ragkd.retrieval import TfidfEncoder
    >>> texts = ["Paris is in France", "Rome is in Italy", "Bern is in Switzerland"]
    >>> type(keras_query_encoder(TfidfEncoder(dim=2).fit(texts))).__name__
    'TfidfQueryEncoder'
    """
    if isinstance(encoder, TfidfEncoder):
        return TfidfQueryEncoder.from_encoder(encoder)
    model = getattr(encoder, "model", None)
    if getattr(encoder, "tokenizer", None) is None and model is not None:
        return model  # A `KerasTextEncoder` without a separate tokenizer.
    if hasattr(encoder, "call"):
        return encoder
    raise TypeError(
        "Expected a `MiniLMEncoder`, a fitted `TfidfEncoder` or a Keras layer "
        f"on raw strings. Received: encoder={encoder!r}"
    )


def check_query_encoder(query_encoder, index):
    """Raises `ValueError` unless `query_encoder` embeds into `index`'s space.

    A model's query encoder must be the encoder the index's passages were
    embedded with: the same `identity` where the encoder has one (MiniLM,
    TF-IDF), else at least the same dimension.

    Args:
        query_encoder: a model's query encoder (a Keras layer).
        index: a `PassageIndex`.
    """
    identity = getattr(query_encoder, "identity", None)
    if identity is not None and identity != index.encoder_identity:
        raise ValueError(
            "The index was built with another encoder than the model's query "
            f"encoder ({identity!r}), so its vectors are not comparable; build "
            "the index with the model's encoder. Received: "
            f"index.encoder_identity={index.encoder_identity!r}"
        )
    dim = getattr(query_encoder, "dim", None)
    if isinstance(dim, int) and dim != index.dim:
        raise ValueError(
            f"The model's query encoder embeds into {dim} dimensions, the index "
            f"into {index.dim}. Received: index.dim={index.dim}"
        )
