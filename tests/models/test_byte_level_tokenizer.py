import random

import gguf
import keras
import numpy as np
import pytest
import tensorflow as tf
from tokenizers import AddedToken
from tokenizers import Tokenizer
from tokenizers import models
from tokenizers import pre_tokenizers

from keras_ragkd.models import ByteLevelLlama3Tokenizer
from keras_ragkd.models import llama3_tokenizer_from_gguf
from keras_ragkd.models import smollm2_gguf_path
from keras_ragkd.models import split_for_byte_level_bpe

FIXED_STRINGS = [
    "",
    " ",
    "  ",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tab\tseparated\t\tvalues\t",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\nendings\r\n",
    "\n\n\n",
    " \n \n",
    "Hello, world!",
    "The capital of France is Paris.",
    "don't won't it's we're they've I'm you'll he'd",
    "DON'T IT'S 'quoted' ''double''",
    "naïve café résumé façade jalapeño",
    "Zürich Ærøskøbing Łódź Dvořák São Paulo",
    "ÀÉÎÕÜ àéîõü ß ẞ",
    "e\u0301 combining accent vs é",
    "Ελληνικά και Русский язык",
    "中文分词测试，标点符号。",
    "日本語のテキストです",
    "한국어 텍스트",
    "العربية نص قصير",
    "हिन्दी पाठ",
    "emoji 😀😃😄 👍🏽 🇫🇷 👨‍👩‍👧 ❤️",
    "1234567890",
    "3.14159 2.71828 -0.5 1e-10",
    "2024-01-31T12:30:00Z",
    "$1,000,000.00 and 50% off",
    "phone: +1 (555) 123-4567",
    "٣٤٥ ²³ ½ Ⅻ ①",
    "version 10  11   12",
    "def add(a, b):\n    return a + b\n",
    "class Foo:\n    def __init__(self):\n        self.x = 1\n",
    "if (x > 0) {\n\treturn x;\n}\n",
    "for i in range(10):\n        print(i)",
    "    deeply\n        nested\n            code",
    "x=1;y=2;z=x+y",
    "<html><body><p>Hi</p></body></html>",
    "https://example.com/path?q=1&r=2#frag",
    "user.name@example.com",
    "#hashtag @mention $cashtag",
    "...!!!???",
    "(parentheses) [brackets] {braces} <angles>",
    "\u00a0no-break\u00a0space",
    "ideographic\u3000space\u3000\u3000twice",
    "thin\u2009space and narrow\u202fone",
    "zero\u200bwidth\u200bspace",
    "mixed \t \n whitespace \r\n end",
    "vertical\x0btab and form\x0cfeed",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more text",
    "<filename>main.py<file_sep>",
    "<|im_start|>  spaced <|im_end|>  ",
    "<|im_start|<|im_end|>|>",
    "Ünïcödé ŠŤŘÍŇĜ",
]

LONG_TEXT = (
    "Paris is the capital and largest city of France. With an estimated "
    "population of 2,102,650 residents in January 2023 in an area of more "
    "than 105 km², Paris is the fourth-most populous city in the European "
    "Union.\n\n    Indented paragraph with  double  spaces.\r\n"
) * 12

FRAGMENTS = [
    "the", "The", "capital", " of", "France", "é", "ï", "1", "23", "456",
    " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "'s", "'t", "'re", "!", "?",
    "...", "😀", "👍🏽", "中文", "\u00a0", "\u3000", "(", ")", "x_y", "{", "}",
    "#", "٣", "²", "'", "-", "—", "<|im_end|>", "<|im_start|>", "==", "->",
    "def", "return", "    ", "\t\t", "Ω", "ß",
]


def varied_strings():
    """200+ test strings: fixed cases, a long text, seeded random mixtures."""
    rng = random.Random(1234)
    strings = list(FIXED_STRINGS) + [LONG_TEXT]
    while len(strings) < 220:
        strings.append(
            "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 16)))
        )
    return strings


@pytest.fixture(scope="module")
def gguf_vocabulary():
    """Tokens, merges and control tokens read straight from the file with `gguf`."""
    reader = gguf.GGUFReader(smollm2_gguf_path())
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    specials = [t for t, kind in zip(tokens, types) if kind == 3]
    return tokens, merges, specials


@pytest.fixture(scope="module")
def reference(gguf_vocabulary):
    """Hugging Face `tokenizers` set up as SmolLM2's `tokenizer.json` is.

    Byte-level BPE over the same vocabulary and merges, pre-tokenized by
    `Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=
    False, use_regex=True)])` (llama.cpp's "smollm" pre-tokenizer: `\\p{N}`,
    then GPT-2's regex), the control tokens matched whole.
    """
    tokens, merges, specials = gguf_vocabulary
    tokenizer = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(tokens)},
            merges=[tuple(m.split(" ")) for m in merges],
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials]
    )
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer(smollm2_checkpoint):
    return llama3_tokenizer_from_gguf(smollm2_checkpoint)


def reference_ids(reference, strings):
    return [e.ids for e in reference.encode_batch(strings)]


def agreement(got, want):
    return sum(list(g) == list(w) for g, w in zip(got, want))


def test_graph_ids_match_hugging_face_on_varied_strings(tokenizer, reference):
    # `tf.data` traces the tokenizer: the in-graph (RE2 + TF ops) path.
    strings = varied_strings()
    assert len(strings) >= 200
    dataset = tf.data.Dataset.from_tensor_slices(strings).batch(64).map(tokenizer)
    got = [row for batch in dataset for row in batch.to_list()]
    want = reference_ids(reference, strings)
    mismatches = [
        (s, g, w) for s, g, w in zip(strings, got, want) if list(g) != list(w)
    ]
    assert agreement(got, want) == len(strings), mismatches[:3]


def test_eager_ids_match_hugging_face_on_varied_strings(tokenizer, reference):
    strings = varied_strings()
    got = tokenizer(strings)
    assert agreement(got, reference_ids(reference, strings)) == len(strings)


def test_whitespace_runs_leave_their_last_space_to_the_next_word(tokenizer):
    # GPT-2's whitespace rule, spelled out.
    pieces = split_for_byte_level_bpe(
        tf.constant(["  leading", "a\r\nb", "x  =  1", "\u00a0 a"]),
        individual_digits=True,
    ).to_list()
    assert pieces == [
        [b" ", b" leading"],
        [b"a", b"\r", b"\n", b"b"],
        # Digits split first, so "  " ends its segment and stays whole.
        [b"x", b" ", b" =", b"  ", b"1"],
        ["\u00a0".encode(), b" a"],
    ]
    ids = tokenizer(["  leading"])[0]
    assert [tokenizer.id_to_token(i) for i in ids] == ["Ġ", "Ġleading"]


def test_special_tokens_are_single_ids(tokenizer):
    ids = tokenizer("<|im_start|>user\nHi<|im_end|>")
    assert ids[0] == tokenizer.start_token_id == 1
    assert ids[-1] == tokenizer.end_token_id == 2
    assert tokenizer.end_token2_id == 0  # <|endoftext|> also stops generate
    assert tokenizer.pad_token_id not in (0, 2)


def test_detokenize_inverts_tokenize(tokenizer):
    strings = varied_strings()[:80]
    ids = tokenizer(strings)
    assert tokenizer.detokenize(ids) == strings  # eager: Hugging Face's decoder
    in_graph = tf.function(tokenizer.detokenize)(tf.ragged.constant(ids))
    assert [t.decode("utf-8") for t in in_graph.numpy()] == strings


def test_config_round_trip_gives_the_same_ids(tokenizer, tmp_path):
    config = keras.saving.serialize_keras_object(tokenizer)
    assert config["registered_name"] == "keras_ragkd>ByteLevelLlama3Tokenizer"
    tokenizer.save_assets(str(tmp_path))
    restored = keras.saving.deserialize_keras_object(config)
    restored.load_assets(str(tmp_path))
    strings = FIXED_STRINGS[:20]
    assert restored(strings) == tokenizer(strings)
    assert restored.end_token2_id == tokenizer.end_token2_id
    assert restored.pad_token_id == tokenizer.pad_token_id


def test_exported_savedmodel_tokenizes_like_eager(tokenizer, tmp_path):
    archive = keras.export.ExportArchive()
    archive.track(tokenizer)
    archive.add_endpoint(
        "tokenize",
        lambda x: tokenizer(x).to_tensor(default_value=-1),
        input_signature=[tf.TensorSpec((None,), tf.string)],
    )
    archive.write_out(str(tmp_path / "tokenizer"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "tokenizer"))
    strings = ["  leading spaces 2024", "a\r\nb", "<|im_start|>user\nHi<|im_end|>"]
    got = reloaded.tokenize(tf.constant(strings)).numpy()
    for row, want in zip(got, tokenizer(strings)):
        assert row[row >= 0].tolist() == list(want)


def test_pad_token_that_stops_generation_is_refused():
    vocabulary = {"<|im_start|>": 0, "<|im_end|>": 1, "Ġ": 2, "a": 3, "Ġa": 4}
    with pytest.raises(ValueError, match="Received: pad_token_id=1"):
        ByteLevelLlama3Tokenizer(vocabulary, ["Ġ a"], pad_token="<|im_end|>")
    with pytest.raises(ValueError, match="Received: pad_token='<pad>'"):
        ByteLevelLlama3Tokenizer(vocabulary, ["Ġ a"], pad_token="<pad>")
    # Without `pad_token`, id 0 pads: fine unless it is an end token. A
    # plain token may pad without being cut out of the text.
    assert ByteLevelLlama3Tokenizer(vocabulary, ["Ġ a"]).pad_token_id == 0
    padded_with_a = ByteLevelLlama3Tokenizer(vocabulary, ["Ġ a"], pad_token="a")
    assert padded_with_a.pad_token_id == 3
    assert padded_with_a(" aa").tolist() == [4, 3]  # "Ġa" "a": "a" not split out


def test_fixed_sequence_length_pads_with_the_pad_token(tokenizer):
    dense = ByteLevelLlama3Tokenizer.from_config(
        {**tokenizer.get_config(), "sequence_length": 6}
    )
    dense.set_vocabulary_and_merges(tokenizer.vocabulary, tokenizer.merges)
    ids = np.asarray(dense(["Paris"]))
    assert ids.shape == (1, 6)
    assert ids[0, 1:].tolist() == [tokenizer.pad_token_id] * 5
