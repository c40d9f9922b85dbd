import json

import pytest

from keras_ragkd import cli


@pytest.fixture(scope="module")
def index_directory(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "countries"
    cli.main(
        ["build-index", str(directory), "--countries", "France", "Italy", "Japan",
         "--verbose", "0"]
    )
    return directory


def test_build_index_then_search_finds_the_capital(index_directory, capsys):
    capsys.readouterr()
    cli.main(["search", str(index_directory), "What is the capital of Italy?", "-k", "2"])
    line = json.loads(capsys.readouterr().out.strip())
    assert line["query"] == "What is the capital of Italy?"
    assert line["hits"][0]["id"] == "italy/capital"
    assert "Rome" in line["hits"][0]["text"]
    assert len(line["hits"]) == 2


def test_search_with_k_larger_than_the_index_returns_every_passage(index_directory, capsys):
    capsys.readouterr()
    cli.main(["search", str(index_directory), "Japan", "-k", "50"])
    hits = json.loads(capsys.readouterr().out.strip())["hits"]
    assert len(hits) == 12
    assert len({hit["id"] for hit in hits}) == 12


def test_unknown_encoder_identity_is_refused():
    with pytest.raises(ValueError, match="Received: encoder_identity='tfidf-svd/8/abc'"):
        cli._sequence_length_of("tfidf-svd/8/abc")
