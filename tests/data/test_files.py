import json

import pytest

from keras_ragkd.data import DataFileError
from keras_ragkd.data import read_corpus
from keras_ragkd.data import read_qa_pairs

PASSAGES = [
    {"id": "fr", "title": "France", "text": "The capital of France is Paris."},
    {"id": "it", "text": "The capital of Italy is Rome."},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_corpus_keeps_order_and_defaults_the_title(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", PASSAGES)
    path.write_text(path.read_text() + "\n   \n")  # blank lines are skipped
    assert read_corpus(path) == [
        {"id": "fr", "title": "France", "text": "The capital of France is Paris."},
        {"id": "it", "title": "", "text": "The capital of Italy is Rome."},
    ]


def test_csv_corpus_with_quotes_bom_and_multiline_fields(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_bytes(
        "\ufeffid,title,text,url\n"
        'fr,France,"Paris, on the Seine,\nis the capital.",http://x\n'
        "\n"
        "it,,Rome is the capital of Italy.,\n".encode("utf-8")
    )
    assert read_corpus(path) == [
        {"id": "fr", "title": "France", "text": "Paris, on the Seine,\nis the capital."},
        {"id": "it", "title": "", "text": "Rome is the capital of Italy."},
    ]


def test_qa_pairs_from_jsonl_and_csv(tmp_path):
    pairs = [{"question": "Capital of Italy?", "answer": "Rome", "type": "capital"}]
    expected = [{"question": "Capital of Italy?", "answer": "Rome"}]
    assert read_qa_pairs(write_jsonl(tmp_path / "qa.jsonl", pairs)) == expected
    (tmp_path / "qa.csv").write_text("answer,question\nRome,Capital of Italy?\n")
    assert read_qa_pairs(tmp_path / "qa.csv") == expected


@pytest.mark.parametrize(
    "content, line, message",
    [
        ('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', 2, "Malformed JSON"),
        ('{"id": "a", "text": "x"}\n\n{"text": "no id"}\n', 3, "Missing field 'id'"),
        ('{"id": 7, "text": "x"}\n', 1, "Received: id=7"),
        ('{"id": "a", "text": "x", "title": ["T"]}\n', 1, r"Received: title=\['T'\]"),
        ('{"id": "a", "text": null}\n', 1, "Field 'text' must be a string"),
        ('{"id": "a", "text": "  "}\n', 1, "must not be empty"),
        ('["a", "x"]\n', 1, "Expected a JSON object per line"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', 2, "already on line 1"),
    ],
)
def test_bad_jsonl_corpus_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message) as info:
        read_corpus(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(info.value) and "Received: " in str(info.value)
    assert (info.value.path, info.value.line) == (str(path), line)


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("id,body\na,x\n", 1, "missing 'text'"),
        ("id,text\na,x\n,y\n", 3, "Field 'id' must not be empty"),
        ("id,text\na,x\nb,y,extra\n", 3, "at most 2 fields"),
        ('id,text\na,"unterminated\n', 2, "Malformed CSV"),
        ("id,text\na,x\nb\n", 3, "Missing field 'text'"),
    ],
)
def test_bad_csv_corpus_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "corpus.csv"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message) as info:
        read_corpus(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_file_level_errors(tmp_path):
    for name in ("missing.jsonl", "missing.csv"):
        with pytest.raises(DataFileError, match="No such file"):
            read_corpus(tmp_path / name)
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataFileError, match="not a folder"):
        read_qa_pairs(tmp_path / "folder.jsonl")
    (tmp_path / "corpus.txt").write_text("hello")
    with pytest.raises(DataFileError, match="Received: extension='.txt'"):
        read_corpus(tmp_path / "corpus.txt")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataFileError, match="empty.jsonl: Expected at least one passage"):
        read_corpus(tmp_path / "empty.jsonl")
    (tmp_path / "header_only.csv").write_text("question,answer\n")
    with pytest.raises(DataFileError, match="at least one question/answer pair"):
        read_qa_pairs(tmp_path / "header_only.csv")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "Caf\xe9?", "answer": "x"}\n')
    with pytest.raises(DataFileError, match=r"latin1.jsonl:1: Expected UTF-8"):
        read_qa_pairs(tmp_path / "latin1.jsonl")
    (tmp_path / "qa.jsonl").write_text('{"question": "Why?"}\n')
    with pytest.raises(DataFileError, match=r"qa.jsonl:1: Missing field 'answer'"):
        read_qa_pairs(tmp_path / "qa.jsonl")


def test_data_package_imports_nothing_else_of_ours():
    """Except the shared argument checks, a leaf module importing nothing of ours."""
    import ast
    import pathlib

    import keras_ragkd.data

    for path in pathlib.Path(keras_ragkd.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("keras_ragkd") or node.module.startswith(
                    ("keras_ragkd.data", "keras_ragkd.validation")
                ), (path.name, node.module)
