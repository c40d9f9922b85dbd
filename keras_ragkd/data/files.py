"""Readers for the user's own data: passage corpora and question/answer pairs.

Two formats, chosen by the file's extension:

- JSON Lines (`.jsonl`, `.ndjson`): one JSON object per line; blank lines
  are skipped.
- CSV (`.csv`): a header row naming the fields, then one record per row
  (UTF-8, an optional byte-order mark; quoted fields may span lines).

A corpus record is `{"id", "text", "title"?}`; a question/answer record is
`{"question", "answer"}`. Other fields are ignored. Every problem is a
`DataFileError` (a `ValueError`) whose message starts with `file:line:` and
ends with `Received: ...`, so a command line can print it as one line.

This module uses the standard library only.
"""

import csv
import json
import os

JSONL_EXTENSIONS = (".jsonl", ".ndjson")
CSV_EXTENSIONS = (".csv",)
CORPUS_FIELDS = ("id", "text")
CORPUS_OPTIONAL_FIELDS = ("title",)
QA_FIELDS = ("question", "answer")


class DataFileError(ValueError):
    """A data file that cannot be read, with the file and line at fault.

    Attributes:
        path: the file.
        line: 1-based line number, or None for the file as a whole.
    """

    def __init__(self, path, line, expected, received):
        self.path = os.fspath(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {expected}. Received: {received}")


def read_corpus(path):
    """Reads passages `{"id", "title", "text"}` from a JSONL or CSV file.

    `id` and `text` are required non-empty strings, `title` an optional
    string (`""` when absent); ids must be unique within the file.

    Args:
        path: a `.jsonl`/`.ndjson` or `.csv` file.

    Returns:
        A list of dicts `{"id", "title", "text"}`, in file order.

    Raises:
        DataFileError: the file is missing, malformed, empty, has a record
            without a required field, a non-string field, or a duplicate id.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "corpus.jsonl")
    >>> _ = open(path, "w").write(
    ...     '{"id": "fr", "title": "France", "text": "Its capital is Paris."}\\n')
    >>> read_corpus(path)
    [{'id': 'fr', 'title': 'France', 'text': 'Its capital is Paris.'}]
    """
    passages = []
    first_line_of = {}
    for line, record in _records(path, CORPUS_FIELDS, CORPUS_OPTIONAL_FIELDS, "passage"):
        passage_id = record["id"]
        if passage_id in first_line_of:
            raise DataFileError(
                path,
                line,
                "Passage ids must be unique (this id is already on line "
                f"{first_line_of[passage_id]})",
                f"id={passage_id!r}",
            )
        first_line_of[passage_id] = line
        passages.append(
            {"id": passage_id, "title": record.get("title") or "", "text": record["text"]}
        )
    if not passages:
        raise DataFileError(path, None, "Expected at least one passage", "an empty corpus")
    return passages


def read_qa_pairs(path):
    """Reads question/answer pairs `{"question", "answer"}` from JSONL or CSV.

    Both fields are required non-empty strings.

    Args:
        path: a `.jsonl`/`.ndjson` or `.csv` file.

    Returns:
        A list of dicts `{"question", "answer"}`, in file order.

    Raises:
        DataFileError: the file is missing, malformed, empty, or has a record
            without a field or with a non-string one.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "qa.csv")
    >>> _ = open(path, "w").write("question,answer\\nWhat is the capital of France?,Paris\\n")
    >>> read_qa_pairs(path)
    [{'question': 'What is the capital of France?', 'answer': 'Paris'}]
    """
    pairs = [
        {"question": record["question"], "answer": record["answer"]}
        for _, record in _records(path, QA_FIELDS, (), "question/answer pair")
    ]
    if not pairs:
        raise DataFileError(
            path, None, "Expected at least one question/answer pair", "an empty file"
        )
    return pairs


def data_format(path):
    """`"jsonl"` or `"csv"` from a file name, or raises `DataFileError`."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension in JSONL_EXTENSIONS:
        return "jsonl"
    if extension in CSV_EXTENSIONS:
        return "csv"
    raise DataFileError(
        path,
        None,
        "Expected a JSON Lines (" + ", ".join(JSONL_EXTENSIONS) + ") or CSV ("
        + ", ".join(CSV_EXTENSIONS) + ") file",
        f"extension={extension or '(none)'!r}",
    )


def _records(path, required, optional, kind):
    """Yields `(line, record)` with the fields checked; see the readers."""
    path = os.fspath(path)
    file_format = data_format(path)
    if not os.path.exists(path):
        raise DataFileError(path, None, "No such file", f"file={path!r}")
    if not os.path.isfile(path):
        raise DataFileError(path, None, "Expected a file, not a folder", f"file={path!r}")
    rows = _jsonl_rows(path) if file_format == "jsonl" else _csv_rows(path, required)
    for line, record in rows:
        if not isinstance(record, dict):
            raise DataFileError(
                path,
                line,
                f"Expected a JSON object per line (a {kind})",
                f"{type(record).__name__} {_short(record)}",
            )
        for field in required + optional:
            if field not in record or (record[field] is None and field in optional):
                if field in optional:
                    continue
                raise DataFileError(
                    path,
                    line,
                    f"Missing field {field!r}; a {kind} needs "
                    + " and ".join(repr(f) for f in required),
                    f"fields={sorted(record)!r}",
                )
            value = record[field]
            if not isinstance(value, str):
                raise DataFileError(
                    path,
                    line,
                    f"Field {field!r} must be a string",
                    f"{field}={_short(value)}",
                )
            if field in required and not value.strip():
                raise DataFileError(
                    path, line, f"Field {field!r} must not be empty", f"{field}={value!r}"
                )
        yield line, record


def _jsonl_rows(path):
    with open(path, "rb") as file:
        for line, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataFileError(
                    path, line, "Expected UTF-8 text", f"{error.reason} at byte {error.start}"
                ) from None
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as error:
                raise DataFileError(
                    path,
                    line,
                    f"Malformed JSON ({error.msg}, column {error.colno})",
                    f"line={_short(text.strip())}",
                ) from None


def _csv_rows(path, required):
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [name.strip() for name in header]
            missing = [field for field in required if field not in header]
            if missing:
                raise DataFileError(
                    path,
                    1,
                    "Expected a CSV header naming the fields "
                    + ", ".join(repr(f) for f in required)
                    + f" (missing {', '.join(repr(f) for f in missing)})",
                    f"header={header!r}",
                )
            start = reader.line_num + 1
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    if len(row) > len(header):
                        raise DataFileError(
                            path,
                            start,
                            f"Expected at most {len(header)} fields (the header's)",
                            f"{len(row)} fields",
                        )
                    yield start, dict(zip(header, row))
                start = reader.line_num + 1
        except csv.Error as error:
            raise DataFileError(
                path, reader.line_num or 1, "Malformed CSV", str(error)
            ) from None
        except UnicodeDecodeError as error:
            raise DataFileError(
                path,
                reader.line_num + 1,
                "Expected UTF-8 text",
                f"{error.reason} at byte {error.start}",
            ) from None


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
