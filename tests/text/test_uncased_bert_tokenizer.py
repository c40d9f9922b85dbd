"""`UncasedBertTokenizer` against Hugging Face `tokenizers` on real, varied text."""

import itertools
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer

from keras_ragkd.models import load_minilm_tokenizer
from keras_ragkd.models import minilm_preset_path
from keras_ragkd.text import UncasedBertTokenizer

SENTENCES = [
    "Paris is the capital of France.",
    "What is the capital of Côte d'Ivoire?",
    "São Tomé and Príncipe, Curaçao, Réunion, Åland, Ærø",
    "The ﬁnal ﬂight was at 10² km/h — really?",
    "서울은 대한민국의 수도입니다.",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 😀👍🏽🇫🇷 and ❤️ are fun! keycap 1️⃣ family 👨‍👩‍👧",
    "Numbers: 3.14159, 1,000,000, ½, ①②③, ٣٤٥, 二〇二六",
    "Ελληνικά: Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. ΟΔΟΣ ΣΟΦΟΣ ς",
    "Русский: Москва — столица России.",
    "العربية: القاهرة عاصمة مصر مُحَمَّد  Hebrew: שָׁלוֹם",
    "हिन्दी: नई दिल्ली भारत की राजधानी है। Thai: กรุงเทพมหานคร น้ำ",
    "Tiếng Việt: Hà Nội là thủ đô của Việt Nam.",
    "Straße, Maßstab, İstanbul, ǅemal, ﬀ ﬃ ﬄ ẞ ı",
    "C'est l'été; naïve café — coöperate! combining a\u0301 e\u0300 n\u0303",
    "punctuation!!! ... ?!? «quoted» „German“ ‘single’ (paren) [br] {c} … – ― •",
    "math: x² + y³ = z⁴; ∑ ∫ √ ∞ ≤ ≥ ≠ ± ⁰¹ ₀₁ ¼ ⅰⅱ",
    "currency: $5, €10, £3, ¥100, ₹50, ₿",
    "",
    "   ",
    "a",
    "UPPER lower MiXeD",
    "tab\tseparated\tvalues\nnew line\r\ncarriage",
    "https://example.com/path?query=1&b=2#frag email@example.com #tag @you",
    "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝 ⓒⓘⓡⓒⓛⓔ ｆｕｌｌｗｉｄｔｈ ｶﾀｶﾅ",
    "Ⅻ ⅻ № ™ ℃ ℉ Å K Ω",
    "Japanese: カタカナ ひらがな 漢字 Georgian: ა ბ Ა",
    "private \ue000 use and soft\u00adhyphen word\u2011nonbreaking",
]
LONG_WORDS = [
    "a" * 101,
    "b" * 100,
    "é" * 60,
    "x" * 150 + " short",
    "supercalifragilisticexpialidocious" * 3,
    "한국어" * 20,
    "ü" * 101,
    "antidisestablishmentarianism" * 4 + "!",
]
SPACES = ["\u00a0", "\u3000", "\u2009", "\u202f", "\u2003", "\u1680", "\u2028", "\u0085", "\x0b", "\x0c"]
CONTROLS = ["\u200b", "\u200d", "\u00ad", "\ufeff", "\x00", "\x07", "\u2060", "\u200e", "\x7f", "\ufffd"]


def varied_strings():
    """240 strings: scripts, spaces, control/format characters, long words."""
    strings = SENTENCES + LONG_WORDS
    for space in SPACES:
        strings.append(space.join(["Paris", "is", "the", "capital", "of", "France."]))
        strings.append(f"Bern{space}is{space}Swiss and Rome{space}is Italian.")
    for control in CONTROLS:
        strings.append(f"Pa{control}ris is the capi{control}tal of France.")
        strings.append(f"{control}start and end{control}")
    pairs = itertools.product(SENTENCES[:14], SENTENCES[14:])
    strings += [f"{a} {b}" for a, b in itertools.islice(pairs, 240 - len(strings))]
    return strings


@pytest.fixture(scope="module")
def reference():
    """Hugging Face's tokenizer of the sentence-transformers package (no [CLS]/[SEP])."""
    tokenizer = Tokenizer.from_file(os.path.join(minilm_preset_path(), "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def tokenizer():
    return load_minilm_tokenizer()


def test_ids_equal_hugging_face_on_varied_strings(tokenizer, reference):
    strings = varied_strings()
    assert len(strings) == 240
    graph = tf.function(lambda texts: tokenizer(texts))(tf.constant(strings)).to_list()
    eager = tokenizer(strings)
    differing = [s for s, ids in zip(strings, graph) if ids != reference(s)]
    assert differing == []
    assert eager == graph


def test_keras_hub_bert_tokenizer_differs_where_this_one_matches(tokenizer, reference):
    # Why the class exists: keras-hub's uncased options on the same vocabulary.
    keras_hub_tokenizer = keras_hub.tokenizers.BertTokenizer(
        vocabulary=tokenizer.get_vocabulary(), lowercase=True, strip_accents=True
    )
    text = "Paris\u00a0is the ﬁnal capital of 서울."
    assert tokenizer([text])[0] == reference(text)
    assert keras_hub_tokenizer([text])[0] != reference(text)


def test_dense_scalar_and_tf_data_outputs(tokenizer, reference):
    dense = load_minilm_tokenizer(sequence_length=4)
    ids = np.asarray(dense(["Paris", "Bern\u3000is the capital of Switzerland."]))
    assert ids.shape == (2, 4)
    assert ids[0].tolist() == reference("Paris") + [0, 0, 0]
    assert ids[1].tolist() == reference("Bern is the capital")
    assert np.asarray(tokenizer("Paris\u00a0is")).tolist() == reference("Paris is")
    dataset = tf.data.Dataset.from_tensor_slices(SENTENCES[:4]).batch(2).map(dense)
    np.testing.assert_array_equal(
        np.concatenate([batch.numpy() for batch in dataset]), np.asarray(dense(SENTENCES[:4]))
    )


def test_saved_model_tokenizes_without_keras_ragkd(tokenizer, reference, tmp_path):
    module = tf.Module()
    module.tokenizer = tokenizer
    module.tokenize = tf.function(
        lambda texts: tokenizer(texts).to_tensor(),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path))
    served = tf.saved_model.load(str(tmp_path))
    text = "Kyōto\u00a0is in 日本\u200b."
    ids = served.tokenize(tf.constant([text])).numpy()[0].tolist()
    assert ids == reference(text)


def test_keras_round_trip_keeps_the_tokenisation(tokenizer, reference):
    config = keras.saving.serialize_keras_object(tokenizer)
    restored = keras.saving.deserialize_keras_object(config)
    restored.set_vocabulary(tokenizer.get_vocabulary())
    assert isinstance(restored, UncasedBertTokenizer)
    text = "ΣΟΦΟΣ\u2009² ﬁ"
    assert restored([text])[0] == reference(text)


def test_rank_2_inputs_are_refused(tokenizer):
    with pytest.raises(ValueError, match="Received: inputs.shape="):
        tokenizer(tf.constant([["a", "b"]]))
