"""A second knowledge base: the chemical elements from `periodictable`.

Built at run time from the `periodictable` PyPI package (public domain, pure
Python); no data files are copied into this repository. Its passages and
questions use a style and a vocabulary of their own (symbols, atomic numbers,
masses, densities, periods), unlike the country knowledge base of
`keras_ragkd.data.countries`: a retrieval-augmented model trained on the
countries can be pointed at an index of these passages (`model.with_index`)
to measure how it answers about a knowledge base it never saw.

Each element yields up to four passages (one per passage kind, see
`PASSAGE_KINDS`) and question/answer pairs from two question templates per
fact; every answer appears verbatim in the passage named by `passage_id`.
"""

import functools
import re

from keras_ragkd.data.selection import check_question_types
from keras_ragkd.data.selection import check_wording
from keras_ragkd.data.selection import record_passages
from keras_ragkd.data.selection import select_records

PASSAGE_KINDS = ("identity", "mass", "density", "position")

# The rows of the periodic table: the atomic number that ends each period.
_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)

QUESTION_TEMPLATES = {
    "symbol": (
        "What is the chemical symbol of {element}?",
        "Which symbol stands for {element}?",
    ),
    "element_of_symbol": (
        "Which element has the symbol {symbol}?",
        "The symbol {symbol} stands for which element?",
    ),
    "atomic_number": (
        "What is the atomic number of {element}?",
        "Which element number is {element}?",
    ),
    "element_of_number": (
        "Which element has atomic number {number}?",
        "Element number {number} is which element?",
    ),
    "atomic_mass": (
        "What is the atomic mass of {element}?",
        "How heavy is an atom of {element} in atomic mass units?",
    ),
    "density": (
        "What is the density of {element} in grams per cubic centimetre?",
        "How many grams does a cubic centimetre of {element} weigh?",
    ),
    "period": (
        "In which period of the periodic table is {element}?",
        "Which row of the periodic table holds {element}?",
    ),
}

# Other wordings of the same questions, used by no template above (see
# `element_questions(..., wording="reworded")`).
REWORDED_TEMPLATES = {
    "symbol": (
        "Give the symbol of the element {element}.",
        "How is {element} abbreviated in chemistry?",
    ),
    "element_of_symbol": (
        "Name the element whose symbol is {symbol}.",
        "What element does the chemical symbol {symbol} denote?",
    ),
    "atomic_number": (
        "How many protons does an atom of {element} have?",
        "Tell me the atomic number of {element}.",
    ),
    "element_of_number": (
        "Name the element with atomic number {number}.",
        "What is element {number} of the periodic table?",
    ),
    "atomic_mass": (
        "Tell me the atomic mass of {element}.",
        "What does one atom of {element} weigh in u?",
    ),
    "density": (
        "How dense is {element}, in grams per cubic centimetre?",
        "Tell me the density of {element}.",
    ),
    "period": (
        "Which period is {element} in?",
        "In what row of the periodic table does {element} sit?",
    ),
}

WORDINGS = {"training": QUESTION_TEMPLATES, "reworded": REWORDED_TEMPLATES}

# The passage kind whose passage answers each question type.
QUESTION_SOURCES = {
    "symbol": "identity",
    "element_of_symbol": "identity",
    "atomic_number": "identity",
    "element_of_number": "identity",
    "atomic_mass": "mass",
    "density": "density",
    "period": "position",
}


def _number_text(value):
    """A float as short text: 183.84 → "183.84", 294.0 → "294"."""
    return f"{value:.10g}"


def _period(number):
    return next(i + 1 for i, end in enumerate(_PERIOD_ENDS) if number <= end)


def _density_condition(caveat):
    """The measuring condition of a density, from `periodictable`'s caveat."""
    match = re.fullmatch(r"T=(-?[0-9.]+)", caveat or "")
    if match:
        return f" at {match.group(1)} °C"
    if caveat in ("calculated", "estimated", "approximate"):
        return f" ({caveat})"
    return ""


@functools.lru_cache(maxsize=1)
def element_records():
    """Returns one fact record per chemical element, by atomic number.

    Names are capitalised ("Gold"); `periodictable` spells them the American
    way ("Aluminum", "Cesium", "Sulfur"). Masses of elements without stable
    isotopes are the mass number of a long-lived isotope. `density` is
    `None` where the package has none.

    Returns:
        A tuple of dicts with keys `slug`, `name`, `symbol`, `number`,
        `mass`, `density`, `density_condition` and `period` (`mass` and
        `density` as short decimal strings).

    Example:

    >>> gold = [r for r in element_records() if r["name"] == "Gold"][0]
    >>> gold["symbol"], gold["number"], gold["mass"], gold["period"]
    ('Au', 79, '196.96657', 6)
    """
    try:
        import periodictable
    except ImportError as error:
        raise ImportError(
            "The chemical-element knowledge base is built from the `periodictable` "
            "package, an optional dependency of keras_ragkd (the benchmarks' data). "
            "Install it with `pip install 'keras_ragkd[data]'`."
        ) from error

    records = []
    for element in periodictable.elements:
        if element.number < 1:  # The table's element 0 is the neutron.
            continue
        density = element.density
        records.append(
            {
                "slug": element.name.lower(),
                "name": element.name.capitalize(),
                "symbol": element.symbol,
                "number": int(element.number),
                "mass": _number_text(element.mass),
                "density": None if density is None else _number_text(density),
                "density_condition": _density_condition(element.density_caveat),
                "period": _period(element.number),
            }
        )
    return tuple(sorted(records, key=lambda record: record["number"]))


def _mass_text(record):
    if "." in record["mass"]:
        return (
            f"The atomic mass of {record['name']} is {record['mass']}: a mole of "
            f"{record['name']} weighs {record['mass']} grams."
        )
    return (
        f"The atomic mass of {record['name']} is {record['mass']}, the mass number of a "
        f"long-lived isotope: {record['name']} has no stable isotope."
    )


def _density_text(record):
    if record["density"] is None:
        return ""
    return (
        f"A cubic centimetre of {record['name']} weighs {record['density']} grams: its "
        f"density is {record['density']} g/cm³{record['density_condition']}."
    )


def _position_text(record, neighbours):
    before, after = neighbours
    text = f"{record['name']} sits in period {record['period']} of the periodic table"
    if before and after:
        text += f", between {before} and {after}"
    elif after:
        text += f", before {after}"
    elif before:
        text += f", after {before}"
    return text + "."


def _passage_texts(record, neighbours):
    return {
        "identity": (
            f"{record['name']} (symbol {record['symbol']}) is element number "
            f"{record['number']} of the periodic table."
        ),
        "mass": _mass_text(record),
        "density": _density_text(record),
        "position": _position_text(record, neighbours),
    }


def _neighbours():
    """Name of the element before and after each atomic number."""
    names = {record["number"]: record["name"] for record in element_records()}
    return {n: (names.get(n - 1), names.get(n + 1)) for n in names}


def element_passages(elements=None):
    """Builds the element passages, one per element and passage kind.

    Args:
        elements: optional iterable of element names to keep (as in
            `element_records()`, e.g. `"Gold"`). Defaults to every element.

    Returns:
        A list of dicts `{"id", "title", "text"}`; ids are
        `"<element slug>/<passage kind>"`, e.g. `"gold/identity"`.

    Example:

    >>> passages = element_passages(["Tungsten"])
    >>> [p["id"] for p in passages]
    ['tungsten/identity', 'tungsten/mass', 'tungsten/density', 'tungsten/position']
    >>> passages[0]["text"]
    'Tungsten (symbol W) is element number 74 of the periodic table.'
    >>> passages[1]["text"]
    'The atomic mass of Tungsten is 183.84: a mole of Tungsten weighs 183.84 grams.'
    """
    neighbours = _neighbours()
    passages = []
    for record in _select(elements):
        passages.extend(
            record_passages(record, _passage_texts(record, neighbours[record["number"]]))
        )
    return passages


def _answer(record, question_type):
    return {
        "symbol": record["symbol"],
        "element_of_symbol": record["name"],
        "atomic_number": str(record["number"]),
        "element_of_number": record["name"],
        "atomic_mass": record["mass"],
        "density": record["density"],
        "period": str(record["period"]),
    }[question_type]


def element_questions(elements=None, types=None, wording="training"):
    """Builds question/answer pairs about the chemical elements.

    Args:
        elements: optional iterable of element names to keep. Defaults to
            every element.
        types: optional iterable of question types to keep (keys of
            `QUESTION_TEMPLATES`). Defaults to all types.
        wording: `"training"` (the `QUESTION_TEMPLATES`) or `"reworded"`
            (the `REWORDED_TEMPLATES`, the same facts in other words).

    Returns:
        A list of dicts `{"question", "answer", "element", "type",
        "passage_id"}`, where `passage_id` names the passage that holds the
        answer.

    Example:

    >>> pairs = element_questions(["Tungsten"], types=["element_of_symbol", "atomic_mass"])
    >>> [(p["question"], p["answer"]) for p in pairs][::2]
    [('Which element has the symbol W?', 'Tungsten'), ('What is the atomic mass of Tungsten?', '183.84')]
    >>> element_questions(["Gold"], types=["atomic_number"], wording="reworded")[0]["question"]
    'How many protons does an atom of Gold have?'
    """
    check_wording(wording, WORDINGS)
    types = _check_types(types)
    questions = []
    for record in _select(elements):
        for question_type, templates in WORDINGS[wording].items():
            answer = _answer(record, question_type)
            if question_type not in types or answer is None:
                continue
            for template in templates:
                questions.append(
                    {
                        "question": template.format(
                            element=record["name"], symbol=record["symbol"],
                            number=record["number"],
                        ),
                        "answer": answer,
                        "element": record["name"],
                        "type": question_type,
                        "passage_id": f"{record['slug']}/{QUESTION_SOURCES[question_type]}",
                    }
                )
    return questions


def _check_types(types):
    return check_question_types(types, QUESTION_TEMPLATES)


def _select(elements):
    return select_records(element_records(), elements, "elements", "element",
                          "`element_records()` (capitalised, e.g. 'Gold')")