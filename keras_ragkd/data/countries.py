"""The embedded default knowledge base: country facts from `countryinfo`.

Everything is built at run time from the `countryinfo` PyPI package (MIT); no
data files are copied into this repository. Each country yields a few short
passages, one per fact group, and question/answer pairs from several question
templates per fact. Questions are split **by country**: a test country's facts
never appear in any training pair, while its passages stay in the knowledge
base, so a retrieval-augmented model can only answer them through retrieval.
"""

import collections
import functools
import re

import numpy as np

from keras_ragkd.data.selection import check_question_types
from keras_ragkd.data.selection import check_wording
from keras_ragkd.data.selection import record_passages
from keras_ragkd.data.selection import select_records
from keras_ragkd.validation import check_number

FACT_GROUPS = ("capital", "location", "people", "currency")

QUESTION_TEMPLATES = {
    "capital": (
        "What is the capital of {country}?",
        "Which city is the capital of {country}?",
        "Name the capital city of {country}.",
    ),
    "country_of_capital": (
        "{capital} is the capital of which country?",
        "Which country has {capital} as its capital?",
    ),
    "region": (
        "In which region is {country}?",
        "Which world region is {country} part of?",
    ),
    "subregion": (
        "In which subregion is {country}?",
        "Which subregion does {country} belong to?",
    ),
    "demonym": (
        "What are people from {country} called?",
        "What is the demonym of {country}?",
    ),
    "currency": (
        "What is the currency of {country}?",
        "Which currency is used in {country}?",
    ),
    "population": (
        "What is the population of {country}?",
        "How many people live in {country}?",
    ),
    "area": (
        "What is the area of {country} in square kilometres?",
        "How large is {country} in square kilometres?",
    ),
}

# The types asked when none are named: the entity questions. The numeric
# ones ("population", "area"; answers are bare numbers that the passages give
# with their unit, "... a population of 2895947 people.") are asked only when
# named, so the default question set and the figures measured on it stay.
DEFAULT_QUESTION_TYPES = (
    "capital", "country_of_capital", "region", "subregion", "demonym", "currency",
)
NUMERIC_QUESTION_TYPES = ("population", "area")

# Other wordings of the same questions, used by no template above (see
# `country_questions(..., wording="reworded")`): for measuring whether a model
# learned to answer the question or only its training phrasings.
REWORDED_TEMPLATES = {
    "capital": (
        "Tell me the capital of {country}.",
        "Which city serves as the capital of {country}?",
        "{country} has which city as its capital?",
    ),
    "country_of_capital": (
        "Of which country is {capital} the capital?",
        "{capital} is the capital city of what nation?",
    ),
    "region": (
        "What part of the world is {country} in?",
        "{country} lies in which region of the world?",
    ),
    "subregion": (
        "What subregion is {country} located in?",
        "{country} is situated in which subregion?",
    ),
    "demonym": (
        "What do you call a person from {country}?",
        "How are the inhabitants of {country} called?",
    ),
    "currency": (
        "What money do people use in {country}?",
        "What is the official currency of {country}?",
    ),
    "population": (
        "How many inhabitants does {country} have?",
        "Tell me the population of {country}.",
    ),
    "area": (
        "How many square kilometres does {country} cover?",
        "What is the size of {country} in square kilometres?",
    ),
}

# A third set of wordings, used by neither set above: the questions a user has
# without answers (a query log), for distillation from a teacher that answers
# them (`country_questions(..., wording="unlabelled")`); never for evaluation.
UNLABELLED_TEMPLATES = {
    "capital": (
        "What is {country}'s capital?",
        "Capital of {country}?",
        "The capital of {country} is which city?",
    ),
    "country_of_capital": (
        "Which nation's capital is {capital}?",
        "{capital} is the capital of what country?",
    ),
    "region": (
        "Which region of the world does {country} belong to?",
        "Where in the world is {country}?",
    ),
    "subregion": (
        "Which subregion is {country} in?",
        "{country} belongs to which subregion?",
    ),
    "demonym": (
        "What is a person from {country} called?",
        "What are the people of {country} called?",
    ),
    "currency": (
        "Which currency does {country} use?",
        "What do people in {country} pay with?",
    ),
    "population": (
        "What is the number of people living in {country}?",
        "How populous is {country}?",
    ),
    "area": (
        "What area does {country} cover in square kilometres?",
        "How big is {country} in square kilometres?",
    ),
}

WORDINGS = {"training": QUESTION_TEMPLATES, "reworded": REWORDED_TEMPLATES,
            "unlabelled": UNLABELLED_TEMPLATES}

# The fact group whose passage answers each question type.
QUESTION_SOURCES = {
    "capital": "capital",
    "country_of_capital": "capital",
    "region": "location",
    "subregion": "location",
    "demonym": "people",
    "currency": "currency",
    "population": "people",
    "area": "people",
}

_SPLITS = ("train", "test", "all")


def _first(value):
    """Returns the first element of a list-valued field, or the value itself."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@functools.lru_cache(maxsize=1)
def country_records():
    """Returns one cleaned fact record per country, sorted by name.

    Countries without a capital or region are left out. Fields that the
    package lacks for a country are `None`. Border codes are resolved to
    country names.

    Returns:
        A tuple of dicts with keys `slug`, `name`, `capital`, `region`,
        `subregion`, `demonym`, `population`, `area`, `currencies` and
        `borders`.

    Example:

    >>> records = country_records()
    >>> [r["capital"] for r in records if r["name"] == "France"]
    ['Paris']
    """
    try:
        import countryinfo
    except ImportError as error:
        raise ImportError(
            "The embedded country knowledge base is built from the `countryinfo` "
            "package, an optional dependency of keras_ragkd (the demo's data). "
            "Install it with `pip install 'keras_ragkd[data]'`."
        ) from error

    infos = [country.info() for country in countryinfo.all_countries()]
    name_of_code = {
        info["ISO"]["alpha3"]: info["name"]
        for info in infos
        if info.get("ISO") and info.get("name")
    }
    records = []
    for info in infos:
        name, capital = info.get("name"), _first(info.get("capital"))
        if not name or not capital or not info.get("region"):
            continue
        records.append(
            {
                "slug": _slug(name),
                "name": name,
                "capital": capital,
                "region": info["region"],
                "subregion": info.get("subregion") or None,
                "demonym": info.get("demonym") or None,
                "population": info.get("population") or None,
                "area": info.get("area") or None,
                "currencies": tuple(info.get("currencies") or ()),
                "borders": tuple(
                    name_of_code[code]
                    for code in info.get("borders") or ()
                    if code in name_of_code
                ),
            }
        )
    return tuple(sorted(records, key=lambda record: record["name"]))


def _join(names):
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _location_text(record):
    text = f"{record['name']} is a country in the region of {record['region']}"
    if record["subregion"]:
        text += f", in the subregion of {record['subregion']}"
    text += "."
    if record["borders"]:
        text += f" {record['name']} borders {_join(record['borders'])}."
    return text


def _people_text(record):
    parts = []
    if record["demonym"]:
        parts.append(
            f"The demonym of {record['name']} is {record['demonym']}: people "
            f"from {record['name']} are called {record['demonym']}."
        )
    if record["population"]:
        parts.append(
            f"{record['name']} has a population of {record['population']} people."
        )
    if record["area"]:
        parts.append(
            f"{record['name']} has an area of {record['area']} square kilometres."
        )
    return " ".join(parts)


def _currency_text(record):
    if not record["currencies"]:
        return ""
    return f"The currency of {record['name']} is {_join(record['currencies'])}."


def _passage_texts(record):
    return {
        "capital": f"The capital of {record['name']} is {record['capital']}.",
        "location": _location_text(record),
        "people": _people_text(record),
        "currency": _currency_text(record),
    }


def country_passages(countries=None):
    """Builds the knowledge-base passages, one per country and fact group.

    Args:
        countries: optional iterable of country names to keep. Defaults to
            every country.

    Returns:
        A list of dicts `{"id", "title", "text"}`; ids are
        `"<country slug>/<fact group>"`, e.g. `"france/capital"`.

    Example:

    >>> passages = country_passages(["France"])
    >>> passages[0]
    {'id': 'france/capital', 'title': 'France', 'text': 'The capital of France is Paris.'}
    """
    passages = []
    for record in _select(countries):
        passages.extend(record_passages(record, _passage_texts(record)))
    return passages


@functools.lru_cache(maxsize=1)
def _shared_capitals():
    """Capitals named by more than one record (e.g. Burma and Myanmar)."""
    counts = collections.Counter(record["capital"] for record in country_records())
    return frozenset(capital for capital, count in counts.items() if count > 1)


def _answer(record, question_type):
    if question_type == "country_of_capital":
        # "Naypyidaw is the capital of which country?" has no single answer.
        return None if record["capital"] in _shared_capitals() else record["name"]
    if question_type == "currency":
        return record["currencies"][0] if len(record["currencies"]) == 1 else None
    return record[question_type]


def _questions_for(record, templates_of=QUESTION_TEMPLATES):
    questions = []
    for question_type, templates in templates_of.items():
        answer = _answer(record, question_type)
        if not answer:
            continue
        for template in templates:
            questions.append(
                {
                    "question": template.format(
                        country=record["name"], capital=record["capital"]
                    ),
                    "answer": str(answer),
                    "country": record["name"],
                    "type": question_type,
                    "passage_id": f"{record['slug']}/{QUESTION_SOURCES[question_type]}",
                }
            )
    return questions


def country_split(test_fraction=0.2, seed=0):
    """Splits the countries into disjoint train and test sets.

    Args:
        test_fraction: float in (0, 1), the share of countries held out.
        seed: int, seed of the shuffle.

    Returns:
        A tuple `(train_countries, test_countries)` of sorted name lists.

    Example:

    >>> train, test = country_split(test_fraction=0.2, seed=0)
    >>> set(train).isdisjoint(test)
    True
    """
    test_fraction = check_number(
        "test_fraction", test_fraction, 0, 1, low_inclusive=False, high_inclusive=False
    )
    names = [record["name"] for record in country_records()]
    order = np.random.RandomState(seed).permutation(len(names))
    n_test = max(1, int(round(test_fraction * len(names))))
    test = sorted(names[i] for i in order[:n_test])
    train = sorted(names[i] for i in order[n_test:])
    return train, test


def country_questions(split="all", test_fraction=0.2, seed=0, types=None,
                      wording="training"):
    """Builds question/answer pairs about the countries of one split.

    Args:
        split: `"train"`, `"test"` or `"all"`. The split is by country, see
            `country_split`.
        test_fraction: float, the share of countries in the test split.
        seed: int, seed of the country split.
        types: optional iterable of question types to keep (keys of
            `QUESTION_TEMPLATES`). Defaults to `DEFAULT_QUESTION_TYPES`
            (every type but the numeric `"population"` and `"area"`).
        wording: `"training"` (the `QUESTION_TEMPLATES`), `"reworded"`
            (the `REWORDED_TEMPLATES`: the same facts asked in wordings no
            training template uses; for evaluation only) or `"unlabelled"`
            (the `UNLABELLED_TEMPLATES`, used by neither: questions for a
            teacher to answer in distillation, whose answers a student
            should not see).

    Returns:
        A list of dicts `{"question", "answer", "country", "type",
        "passage_id"}`, where `passage_id` names the passage that holds the
        answer.

    Example:

    >>> pairs = country_questions("all", types=["capital"])
    >>> [p["answer"] for p in pairs if p["question"] == "What is the capital of France?"]
    ['Paris']
    >>> reworded = country_questions("all", types=["capital"], wording="reworded")
    >>> [p["question"] for p in reworded if p["country"] == "France"][0]
    'Tell me the capital of France.'
    >>> numeric = country_questions("all", types=NUMERIC_QUESTION_TYPES)
    >>> [(p["answer"], p["passage_id"]) for p in numeric
    ...  if p["question"] == "What is the area of Albania in square kilometres?"]
    [('28748', 'albania/people')]
    """
    if split not in _SPLITS:
        raise ValueError(
            f"`split` must be one of {_SPLITS}. Received: split={split!r}"
        )
    check_wording(wording, WORDINGS)
    types = _check_types(types)
    if split == "all":
        countries = None
    else:
        train, test = country_split(test_fraction=test_fraction, seed=seed)
        countries = train if split == "train" else test
    questions = []
    for record in _select(countries):
        questions.extend(
            q for q in _questions_for(record, WORDINGS[wording]) if q["type"] in types
        )
    return questions


def _check_types(types):
    return check_question_types(
        DEFAULT_QUESTION_TYPES if types is None else types, QUESTION_TEMPLATES
    )


def _select(countries):
    return select_records(country_records(), countries, "countries", "country",
                          "`country_records()`")