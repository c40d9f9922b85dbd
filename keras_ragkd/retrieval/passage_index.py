"""`PassageIndex`: the knowledge base (passages + embeddings + a FAISS index)."""

import dataclasses
import os
import threading
import uuid

import faiss
import keras
import numpy as np

from keras_ragkd.io_utils import write_folder
from keras_ragkd.io_utils import write_json
from keras_ragkd.retrieval import encoder_records
from keras_ragkd.retrieval import index_files
from keras_ragkd.retrieval.encoders import as_text_encoder
from keras_ragkd.retrieval.passage import as_passages
from keras_ragkd.retrieval.passage import check_texts
from keras_ragkd.retrieval.passage import passage_text
from keras_ragkd.validation import check_integer

FORMAT_VERSION = 1
METRIC = "inner_product"


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Top-`k` passages for each of `n` queries.

    Attributes:
        rows: int64 `(n, k)` row numbers into `index.passages`; rows of
            missing results (`mask` False) are 0, never FAISS's `-1`.
        scores: float32 `(n, k)` inner products (0 where `mask` is False).
        embeddings: float32 `(n, k, d)` stored passage embeddings.
        mask: bool `(n, k)`, False where fewer than `k` passages were found.
        passage_ids: list of `n` lists with the ids of the found passages.

    Example:

    >>> import numpy as np
    >>> passages = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}]
    >>> index = PassageIndex.from_embeddings(passages, np.eye(2, dtype="float32"))
    >>> result = index.search(np.array([[0.0, 1.0]], "float32"), k=3)
    >>> result.passage_ids, result.mask.tolist()
    ([['b', 'a']], [[True, True, False]])
    """

    rows: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    mask: np.ndarray
    passage_ids: list


@dataclasses.dataclass(frozen=True)
class _State:
    """One consistent version of the index; replaced whole by mutations."""

    faiss_index: faiss.Index
    embeddings: np.ndarray
    passages: tuple
    rows_by_id: dict
    encoder_identity: str


class PassageIndex:
    """A searchable knowledge base of passages, backed by FAISS.

    Passages are encoded once, L2-normalised and stored next to a FAISS index
    built from any `faiss.index_factory` string, searched by inner product
    (cosine similarity). Rows are numbered `0..N-1` in insertion order.

    Searching is thread-safe and lock-free (several `tf.data` workers or
    `tf.py_function` calls may search at once); mutations (`add`, `rebuild`)
    are serialised by a lock and publish a new version atomically, so a search
    sees either the old or the new knowledge base, never a mix.

    Create one with `PassageIndex.build` (from texts and an encoder) or
    `PassageIndex.from_embeddings` (from precomputed vectors); persist it
    with `save` / `PassageIndex.load`. A saved index records how to rebuild a
    `MiniLMEncoder` or `TfidfEncoder` (the TF-IDF vocabulary and weights are
    saved with it), so a loaded one searches strings right away.

    Args:
        passages: list of dicts `{"id", "text", "title"?}` or `Passage`s.
        embeddings: float array `(N, d)`, one row per passage (L2-normalised
            here unless `faiss_index` is given).
        index_factory: `faiss.index_factory` string.
        encoder: optional encoder for string queries and `add`.
        encoder_identity: identity of the encoder that produced
            `embeddings`; defaults to `encoder.identity`.
        search_parameters: FAISS search parameters (see `build`).
        faiss_index: an already built FAISS index over `embeddings` (used by
            `load`; `embeddings` are then taken as they are, e.g. mmapped).
        directory: folder the index was loaded from or saved to.

    Attributes:
        directory: folder of the last `save`/`load`, or None.
        has_unsaved_changes: True after `add`/`rebuild` until the next `save`
            (a model referencing the index by directory then refuses to save).

    Example:

    >>> from keras_ragkd.retrieval import PassageIndex, TfidfEncoder
    >>> passages = [
    ...     {"id": "fr", "text": "The capital of France is Paris."},
    ...     {"id": "it", "text": "The capital of Italy is Rome."},
    ...     {"id": "de", "text": "The capital of Germany is Berlin."},
    ... ]
    >>> encoder = TfidfEncoder(dim=2).fit([p["text"] for p in passages])
    >>> index = PassageIndex.build(passages, encoder, verbose=0)
    >>> index.search(["capital of Italy"], k=1).passage_ids
    [['it']]
    """

    def __init__(
        self,
        passages,
        embeddings,
        index_factory="Flat",
        encoder=None,
        encoder_identity=None,
        search_parameters=None,
        faiss_index=None,
        directory=None,
    ):
        passages = as_passages(passages)
        if faiss_index is None:
            embeddings = l2_normalize(check_vectors(embeddings, name="embeddings"))
        if len(embeddings) != len(passages):
            raise ValueError(
                "Expected one embedding per passage. Received: "
                f"embeddings.shape={embeddings.shape}, "
                f"num_passages={len(passages)}"
            )
        self.index_factory = index_factory
        self.search_parameters = dict(search_parameters or {})
        self._lock = threading.RLock()
        self._encoder_factory = None
        self._encoder_record = None
        self.encoder = encoder
        if encoder_identity is None and self.encoder is not None:
            encoder_identity = self.encoder.identity
        self.directory = directory
        self.has_unsaved_changes = directory is None
        if faiss_index is None:
            faiss_index = self._new_faiss_index(embeddings)
        self._state = _make_state(
            faiss_index, embeddings, passages, encoder_identity or ""
        )

    @classmethod
    def build(
        cls,
        passages,
        encoder,
        index_factory="Flat",
        batch_size=64,
        search_parameters=None,
        verbose="auto",
    ):
        """Encodes passages and builds the FAISS index.

        Args:
            passages: list of dicts `{"id", "text", "title"?}` or `Passage`s.
                Ids must be unique; `"title. text"` is what gets encoded.
            encoder: `MiniLMEncoder`, `TfidfEncoder`, `KerasTextEncoder` or a
                Keras model mapping strings to vectors.
            index_factory: `faiss.index_factory` string, e.g. `"Flat"`
                (exact), `"HNSW32"`, `"IVF256,Flat"`, `"IVF256,PQ16"`.
                IVF/PQ indexes are trained on the passages themselves.
            batch_size: passages per encoder call.
            search_parameters: dict of FAISS search-time parameters, e.g.
                `{"nprobe": 32}` (IVF) or `{"efSearch": 128}` (HNSW).
                Defaults: `nprobe=min(nlist, 16)`, `efSearch=64`.
            verbose: `"auto"`, 0 or 1: Keras progress bar while encoding.

        Returns:
            A `PassageIndex`.
        """
        passages = as_passages(passages)
        encoder = as_text_encoder(encoder)
        embeddings = encoder.encode(
            [passage_text(p) for p in passages], batch_size=batch_size, verbose=verbose
        )
        return cls(
            passages,
            embeddings,
            index_factory=index_factory,
            encoder=encoder,
            search_parameters=search_parameters,
        )

    @classmethod
    def from_embeddings(cls, passages, embeddings, *args, **kwargs):
        """Builds an index from precomputed vectors `(N, d)` (normalised here).

        The constructor under a name that says what it takes:
        `PassageIndex.from_embeddings(p, e, ...)` is `PassageIndex(p, e, ...)`.

        Args:
            passages: list of dicts `{"id", "text", "title"?}` or `Passage`s.
            embeddings: float array `(N, d)`, one row per passage.
            *args, **kwargs: the constructor's further arguments
                (`index_factory`, `encoder`, `encoder_identity`,
                `search_parameters`), as for `PassageIndex`.

        Example:

        >>> import numpy as np
        >>> from keras_ragkd.retrieval import PassageIndex
        >>> index = PassageIndex.from_embeddings(
        ...     [{"id": str(i), "text": f"passage {i}"} for i in range(3)],
        ...     np.eye(3, 4, dtype="float32"),
        ... )
        >>> index.search(np.eye(1, 4, dtype="float32"), k=2).passage_ids
        [['0', '1']]
        """
        return cls(passages, embeddings, *args, **kwargs)

    @property
    def encoder(self):
        """The encoder of string queries and `add`, or None.

        A loaded MiniLM index rebuilds its `MiniLMEncoder` here, on first use.
        """
        if self._encoder is None and self._encoder_factory is not None:
            with self._lock:
                if self._encoder is None and self._encoder_factory is not None:
                    self._encoder = self._encoder_factory()
                    self._encoder_factory = None
        return self._encoder

    @encoder.setter
    def encoder(self, encoder):
        self._encoder = None if encoder is None else as_text_encoder(encoder)
        self._encoder_factory = None
        self._encoder_record = None

    # Read access (lock-free: one attribute read gives a consistent state).

    def __len__(self):
        return len(self._state.passages)

    @property
    def passages(self):
        """The passages (`Passage` records) in row order."""
        return list(self._state.passages)

    @property
    def embeddings(self):
        """float32 `(N, d)` L2-normalised passage embeddings, in row order."""
        return self._state.embeddings

    @property
    def faiss_index(self):
        """The current `faiss.Index` (do not mutate it directly)."""
        return self._state.faiss_index

    @property
    def dim(self):
        return int(self._state.embeddings.shape[1])

    @property
    def encoder_identity(self):
        """Identity of the encoder that produced the stored embeddings."""
        return self._state.encoder_identity

    def row_of(self, passage_id):
        """Returns the row number of a passage id, or raises `KeyError`."""
        try:
            return self._state.rows_by_id[passage_id]
        except KeyError:
            raise KeyError(
                f"No passage with this id in the index. Received: "
                f"passage_id={passage_id!r}"
            ) from None

    def get(self, passage_id):
        """Returns the `Passage` with this id, or raises `KeyError`."""
        return self._state.passages[self.row_of(passage_id)]

    def search(self, queries, k):
        """Finds the `k` passages with the largest inner product per query.

        Args:
            queries: list of strings (encoded with `index.encoder`) or a
                float `(n, d)` array of query vectors.
            k: positive int. If `k > len(index)`, missing results are masked.

        Returns:
            A `SearchResult`.
        """
        if isinstance(queries, (str, bytes)) or (
            isinstance(queries, (list, tuple)) and queries and isinstance(
                queries[0], str
            )
        ):
            queries = self._encode_queries(queries)
        state = self._state
        rows, scores, mask = self._search_state(state, queries, k)
        embeddings = np.asarray(state.embeddings[rows])
        passage_ids = [
            [state.passages[row].id for row, valid in zip(r, m) if valid]
            for r, m in zip(rows, mask)
        ]
        return SearchResult(rows, scores, embeddings, mask, passage_ids)

    def search_arrays(self, query_vectors, k):
        """`search` for vectors, returning plain arrays (used by the layer).

        Returns:
            Tuple `(rows int64 (n, k), scores float32 (n, k), mask bool (n, k),
            embeddings float32 (n, k, d))`, all from one index version.
        """
        state = self._state
        rows, scores, mask = self._search_state(state, query_vectors, k)
        return rows, scores, mask, np.asarray(state.embeddings[rows])

    def _search_state(self, state, query_vectors, k):
        check_k(k)
        query_vectors = check_vectors(query_vectors, "queries", state.embeddings.shape[1])
        found = min(k, state.faiss_index.ntotal)
        scores, rows = state.faiss_index.search(query_vectors, found)
        if found < k:
            padding = ((0, 0), (0, k - found))
            scores = np.pad(scores, padding)
            rows = np.pad(rows, padding, constant_values=-1)
        mask = rows >= 0
        rows = np.where(mask, rows, 0).astype(np.int64)
        scores = np.where(mask, scores, 0.0).astype(np.float32)
        return rows, scores, mask

    def _encode_queries(self, queries):
        if self.encoder is None:
            raise ValueError(
                "Searching with strings needs an encoder; build the index with "
                "one (a saved index rebuilds a `MiniLMEncoder` or `TfidfEncoder` "
                "by itself), pass `encoder=` to `PassageIndex.load`, or search "
                "with vectors. Received: encoder=None"
            )
        queries = check_texts(queries)
        for position, query in enumerate(queries):
            if not query.strip():
                raise ValueError(
                    "A query must not be empty or blank: it would match every passage "
                    f"equally. Received: queries[{position}]={query!r}"
                )
        return self.encoder.encode(queries, verbose=0)

    # Mutations (serialised; each publishes a new `_State`).

    def add(self, passages, embeddings=None, batch_size=64):
        """Appends passages (rows `len(index)...`), encoding them if needed.

        Args:
            passages: list of dicts or `Passage`s with new, unique ids.
            embeddings: optional float `(n, d)` vectors; encoded with
                `index.encoder` when omitted.
            batch_size: passages per encoder call.
        """
        with self._lock:
            state = self._state
            passages = as_passages(passages, existing_ids=state.rows_by_id)
            if embeddings is None:
                if self.encoder is None:
                    raise ValueError(
                        "`add` needs `embeddings` when the index has no encoder. "
                        "Received: embeddings=None"
                    )
                embeddings = self.encoder.encode(
                    [passage_text(p) for p in passages], batch_size, verbose=0
                )
            embeddings = l2_normalize(
                check_vectors(embeddings, "embeddings", state.embeddings.shape[1])
            )
            if len(embeddings) != len(passages):
                raise ValueError(
                    "Expected one embedding per passage. Received: "
                    f"embeddings.shape={embeddings.shape}, "
                    f"num_passages={len(passages)}"
                )
            faiss_index = faiss.clone_index(state.faiss_index)
            faiss_index.add(embeddings)
            self._state = _make_state(
                faiss_index,
                np.concatenate([state.embeddings, embeddings]),
                state.passages + tuple(passages),
                state.encoder_identity,
            )
            self.has_unsaved_changes = True

    def rebuild(self, encoder=None, batch_size=64, verbose=0):
        """Re-encodes every passage and rebuilds the FAISS index.

        Use it when the passage encoder was trained; rows keep their numbers.

        Args:
            encoder: encoder to use (and keep); defaults to `index.encoder`.
            batch_size: passages per encoder call.
            verbose: 0 or 1: Keras progress bar while encoding.
        """
        with self._lock:
            if encoder is not None:
                self.encoder = as_text_encoder(encoder)
            if self.encoder is None:
                raise ValueError(
                    "`rebuild` needs an encoder. Received: encoder=None"
                )
            state = self._state
            embeddings = self.encoder.encode(
                [passage_text(p) for p in state.passages], batch_size, verbose
            )
            embeddings = l2_normalize(check_vectors(embeddings, "embeddings"))
            self._state = _make_state(
                self._new_faiss_index(embeddings),
                embeddings,
                state.passages,
                self.encoder.identity,
            )
            self.has_unsaved_changes = True

    def _new_faiss_index(self, embeddings):
        faiss_index = check_index_factory(
            self.index_factory, embeddings.shape[1], len(embeddings)
        )
        if not faiss_index.is_trained:
            disable_polysemous_training(faiss_index)
            faiss_index.train(embeddings)
        faiss_index.add(embeddings)
        self.search_parameters = apply_search_parameters(
            faiss_index, self.search_parameters
        )
        return faiss_index

    # Persistence.

    def save(self, directory):
        """Writes the index to `directory` atomically.

        Layout: `manifest.json` (format version, dim, metric, count, encoder
        identity and record, index factory, search parameters, file sizes and
        SHA-256 checksums) and a data folder with `index.faiss`,
        `passages.jsonl`, `embeddings.npy` and, for a `TfidfEncoder`, its
        vocabulary and weights. The data folder is written under a temporary name,
        then the manifest is replaced with `os.replace`; a process killed at
        any point leaves the previous index loadable.

        Args:
            directory: path of the index folder (created if needed).
        """
        directory = os.fspath(directory)
        with self._lock:
            state = self._state
            encoder, record = self._encoder_to_record(state)
            files = {}

            def write(staging):
                files.update(index_files.write_data_files(
                    staging,
                    faiss_index=state.faiss_index,
                    passages=[p.to_dict() for p in state.passages],
                    embeddings=state.embeddings,
                    extra_files=encoder_records.write_encoder_files(
                        encoder, record, staging
                    ),
                ))

            data_folder = f"data-{uuid.uuid4().hex}"
            write_folder(os.path.join(directory, data_folder), write, kind="staging")
            manifest = {
                "format_version": FORMAT_VERSION,
                "dim": self.dim,
                "metric": METRIC,
                "count": len(state.passages),
                "encoder_identity": state.encoder_identity,
                "encoder": record,
                "index_factory": self.index_factory,
                "search_parameters": self.search_parameters,
                "data_folder": data_folder,
                "files": files,
            }
            write_json(os.path.join(directory, index_files.MANIFEST_FILE), manifest)
            index_files.remove_stale_data(directory, keep=data_folder)
            self.directory = os.path.abspath(directory)
            self.has_unsaved_changes = False

    def _encoder_to_record(self, state):
        """`(encoder, record)` to save: the encoder's record if it produced
        the stored embeddings and can be rebuilt from one, else `(None, None)`."""
        record = self._encoder_record
        if self._encoder is None and record is not None:
            # Recorded but not rebuilt (a MiniLM index not yet searched with
            # strings): the record alone suffices where there are no files.
            if encoder_records.ENCODER_FILES[record["class_name"]]:
                return None, None
            return None, record
        encoder = self._encoder
        if encoder is None or encoder.identity != state.encoder_identity:
            return None, None
        record = encoder_records.encoder_record(encoder)
        return (encoder, record) if record is not None else (None, None)

    @classmethod
    def load(cls, directory, encoder="auto", mmap=False, verify_checksums=True):
        """Loads an index written by `save`, refusing damaged or mismatched ones.

        Args:
            directory: the index folder.
            encoder: `"auto"` (default): the encoder the index records (a
                `TfidfEncoder` is read from the index's files and checked at
                once; a `MiniLMEncoder` is built and checked on first use, so
                loading stays fast), or None if it records none. `None`: no
                encoder (search with vectors). Or an encoder for string
                queries, whose `identity` and `dim` must match the ones the
                index was built with.
            mmap: bool. If True, embeddings are memory-mapped (`mmap_mode="r"`)
                and the FAISS index is read with `faiss.IO_FLAG_MMAP`, so large
                indexes load without reading them into memory.
            verify_checksums: bool. Check every file's SHA-256 (sizes are
                always checked).

        Returns:
            A `PassageIndex`.
        """
        directory = os.fspath(directory)
        restore = isinstance(encoder, str) and encoder == "auto"

        def read_encoder(manifest, folder):
            record = manifest.get("encoder")
            encoder_records.check_encoder_record(
                record, os.path.join(directory, index_files.MANIFEST_FILE)
            )
            if not restore:
                return record, (None, None)
            return record, encoder_records.read_encoder(
                record, folder, manifest["encoder_identity"], manifest["dim"]
            )

        manifest, faiss_index, embeddings, passages, restored = (
            index_files.read_index_files(
                directory, FORMAT_VERSION, mmap, verify_checksums, read_extra=read_encoder
            )
        )
        record, (restored_encoder, encoder_factory) = restored
        count, dim = manifest["count"], manifest["dim"]
        if (
            faiss_index.ntotal != count
            or faiss_index.d != dim
            or embeddings.shape != (count, dim)
            or len(passages) != count
        ):
            raise ValueError(
                f"The index files in {directory!r} disagree with the manifest "
                f"(count={count}, dim={dim}). Received: "
                f"faiss_index=(ntotal={faiss_index.ntotal}, d={faiss_index.d}), "
                f"embeddings.shape={embeddings.shape}, num_passages={len(passages)}"
            )
        if restore:
            encoder = restored_encoder
        elif encoder is not None:
            encoder = as_text_encoder(encoder)
            check_encoder_matches(encoder, manifest)
        index = cls(
            passages,
            embeddings,
            index_factory=manifest["index_factory"],
            encoder=encoder,
            encoder_identity=manifest["encoder_identity"],
            search_parameters=manifest["search_parameters"],
            faiss_index=faiss_index,
            directory=os.path.abspath(directory),
        )
        apply_search_parameters(faiss_index, manifest["search_parameters"])
        if encoder_factory is not None:
            index._encoder_factory = encoder_factory
        if restore or encoder is None:
            index._encoder_record = record
        return index

    @staticmethod
    def describe(directory, verify_checksums=True):
        """What a saved index holds, without loading it: a JSON-ready dict.

        Keys: `directory`, `format_version`, `count`, `dim`, `metric`,
        `index_factory`, `search_parameters`, `encoder` (`class_name`,
        `config`, `identity`, `restorable`), `files` (each file's `bytes`,
        `sha256` and `state`: `"ok"`, `"missing"`, `"size mismatch"`,
        `"checksum mismatch"`, or `"size ok"` when checksums are not
        verified), `checksums` (`"ok"`, `"damaged"` or `"not verified"`)
        and `bytes` (all data files).

        Args:
            directory: the index folder.
            verify_checksums: bool, hash every file (else sizes only).

        Example:

        >>> import tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> PassageIndex.from_embeddings(
        ...     [{"id": "a", "text": "a"}, {"id": "b", "text": "b"}], np.eye(2)
        ... ).save(folder)
        >>> info = PassageIndex.describe(folder)
        >>> info["count"], info["dim"], info["checksums"]
        (2, 2, 'ok')
        """
        directory = os.fspath(directory)
        manifest = index_files.read_manifest(directory, FORMAT_VERSION)
        record = manifest.get("encoder")
        encoder_records.check_encoder_record(
            record, os.path.join(directory, index_files.MANIFEST_FILE)
        )
        files = index_files.file_states(directory, manifest, verify_checksums)
        states = {entry["state"] for entry in files.values()}
        if states <= {"ok"}:
            checksums = "ok"
        elif states <= {"ok", "size ok"}:
            checksums = "not verified"
        else:
            checksums = "damaged"
        return {
            "directory": os.path.abspath(directory),
            "format_version": manifest["format_version"],
            "count": manifest["count"],
            "dim": manifest["dim"],
            "metric": manifest["metric"],
            "index_factory": manifest["index_factory"],
            "search_parameters": manifest["search_parameters"],
            "encoder": {
                "class_name": record["class_name"] if record else None,
                "config": record["config"] if record else None,
                "identity": manifest["encoder_identity"],
                "restorable": record is not None,
            },
            "files": files,
            "checksums": checksums,
            "bytes": sum(entry["bytes"] for entry in files.values()),
        }

    def __repr__(self):
        return (
            f"<PassageIndex passages={len(self)} dim={self.dim} "
            f"index_factory={self.index_factory!r} directory={self.directory!r}>"
        )


def _make_state(faiss_index, embeddings, passages, encoder_identity):
    passages = tuple(passages)
    return _State(
        faiss_index=faiss_index,
        embeddings=embeddings,
        passages=passages,
        rows_by_id={p.id: row for row, p in enumerate(passages)},
        encoder_identity=encoder_identity,
    )


def check_index_factory(index_factory, dim, num_passages):
    """Returns an empty FAISS index for `index_factory`, or raises `ValueError`.

    Checks that FAISS parses the string for `dim`-dimensional vectors with
    the inner-product metric, and that `num_passages` vectors are enough to
    train it (IVF lists, PQ codebooks). Cheap: call it before encoding.

    Example:

    >>> check_index_factory("HNSW32", 8, 10).d
    8
    """
    if not isinstance(index_factory, str):
        raise ValueError(
            "Expected a `faiss.index_factory` string such as 'Flat', 'HNSW32', "
            f"'IVF256,Flat' or 'IVF256,PQ16'. Received: index_factory={index_factory!r}"
        )
    try:
        faiss_index = faiss.index_factory(dim, index_factory, faiss.METRIC_INNER_PRODUCT)
    except (RuntimeError, TypeError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown"
        raise ValueError(
            "Expected a `faiss.index_factory` string such as 'Flat', "
            f"'HNSW32', 'IVF256,Flat' or 'IVF256,PQ16' ({reason}). "
            f"Received: index_factory={index_factory!r}"
        ) from None
    if not faiss_index.is_trained:
        required = min_training_points(faiss_index)
        if num_passages < required:
            raise ValueError(
                f"Index {index_factory!r} must be trained on at least "
                f"{required} passages; use fewer IVF lists / PQ bits or a "
                "'Flat'/'HNSW32' index for small corpora. Received: "
                f"num_passages={num_passages}"
            )
    return faiss_index


# A search returns `k` columns per query (with their embeddings): a bound
# that keeps a mistyped `k` from asking for terabytes.
MAX_K = 65536


def check_k(k):
    """Raises `ValueError` unless `k` is a positive integer of at most `MAX_K`."""
    check_integer("k", k)
    if k > MAX_K:
        raise ValueError(
            f"`k` must be at most {MAX_K} (a search returns `k` passages per query, "
            f"masked where the index has fewer). Received: k={k!r}"
        )


def check_vectors(vectors, name, dim=None):
    """Returns `vectors` as a C-contiguous float32 `(n, d)` array, or raises."""
    if keras.ops.is_tensor(vectors):
        vectors = keras.ops.convert_to_numpy(vectors)
    vectors = np.asarray(vectors)
    if vectors.dtype.kind not in "fiu":
        raise TypeError(
            f"Expected `{name}` to be a float array (n, d) (or a list of "
            f"strings for queries). Received: {name}.dtype={vectors.dtype}"
        )
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty 2-D array (n, d). "
            f"Received: {name}.shape={vectors.shape}"
        )
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(
            f"Expected `{name}` of dimension {dim} (the index's). "
            f"Received: {name}.shape={vectors.shape}"
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ValueError(
            f"`{name}` must be finite. Received: {name} with "
            f"{int((~np.isfinite(vectors)).sum())} NaN/inf values"
        )
    return vectors


def l2_normalize(vectors):
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def min_training_points(faiss_index):
    """Fewest vectors FAISS accepts to train this index (IVF lists, PQ codes)."""
    required = 1
    ivf = faiss.try_extract_index_ivf(faiss_index)
    if ivf is not None:
        required = max(required, ivf.nlist)
    product_quantizer = getattr(faiss.downcast_index(faiss_index), "pq", None)
    if product_quantizer is None and ivf is not None:
        product_quantizer = getattr(faiss.downcast_index(ivf), "pq", None)
    if product_quantizer is not None:
        required = max(required, product_quantizer.ksub)
    return required


def disable_polysemous_training(faiss_index):
    """Skips PQ polysemous training (slow annealing; only for Hamming search)."""
    for candidate in (faiss_index, faiss.try_extract_index_ivf(faiss_index)):
        if candidate is not None:
            candidate = faiss.downcast_index(candidate)
            if hasattr(candidate, "do_polysemous_training"):
                candidate.do_polysemous_training = False


def apply_search_parameters(faiss_index, search_parameters):
    """Sets FAISS search parameters, with sensible defaults; returns them."""
    resolved = {}
    ivf = faiss.try_extract_index_ivf(faiss_index)
    if ivf is not None:
        resolved["nprobe"] = min(ivf.nlist, 16)
    if "HNSW" in type(faiss.downcast_index(faiss_index)).__name__:
        resolved["efSearch"] = 64
    resolved.update(search_parameters or {})
    space = faiss.ParameterSpace()
    for name, value in resolved.items():
        try:
            space.set_index_parameter(faiss_index, name, value)
        except RuntimeError as error:
            raise ValueError(
                f"FAISS cannot set this search parameter on the index ({error}). "
                f"Received: {name}={value!r}"
            ) from None
    return resolved


def check_encoder_matches(encoder, manifest):
    if encoder.dim != manifest["dim"]:
        raise ValueError(
            f"The encoder's dimension does not match the index "
            f"(dim={manifest['dim']}). Received: encoder.dim={encoder.dim}"
        )
    if encoder.identity != manifest["encoder_identity"]:
        raise ValueError(
            "The encoder differs from the one the index was built with "
            f"({manifest['encoder_identity']!r}); rebuild the index with it. "
            f"Received: encoder.identity={encoder.identity!r}"
        )
