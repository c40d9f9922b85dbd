"""Passage records: the unit of the knowledge base."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Passage:
    """One knowledge-base passage.

    Args:
        id: non-empty string, unique within an index (e.g. `"france/capital"`).
        text: the passage text that is encoded and given to a generator.
        title: optional title (e.g. the country name).

    Example:

    >>> from keras_ragkd.retrieval import Passage
    >>> Passage(id="france/capital", text="The capital of France is Paris.")
    Passage(id='france/capital', text='The capital of France is Paris.', title='')
    """

    id: str
    text: str
    title: str = ""

    def __post_init__(self):
        for field in ("id", "text", "title"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise TypeError(
                    f"A passage's `{field}` must be a string. "
                    f"Received: {field}={value!r}"
                )
        if not self.id:
            raise ValueError(
                f"A passage's `id` must be a non-empty string. Received: id={self.id!r}"
            )

    def to_dict(self):
        return {"id": self.id, "title": self.title, "text": self.text}


def as_passage(item):
    """Converts a `Passage` or a dict `{"id", "text", "title"?}` to `Passage`."""
    if isinstance(item, Passage):
        return item
    if isinstance(item, dict):
        missing = {"id", "text"} - set(item)
        if missing:
            raise ValueError(
                "A passage dict needs the keys 'id' and 'text' ('title' is "
                f"optional). Received: passage={item!r}"
            )
        return Passage(id=item["id"], text=item["text"], title=item.get("title", ""))
    raise TypeError(
        "Expected a `Passage` or a dict with keys 'id', 'text' and optionally "
        f"'title'. Received: passage={item!r}"
    )


def as_passages(items, existing_ids=()):
    """Converts passages, refusing an empty list and duplicate ids."""
    if isinstance(items, (str, bytes, dict, Passage)) or not hasattr(
        items, "__iter__"
    ):
        raise TypeError(
            "Expected a list of passages (dicts or `Passage` records). "
            f"Received: passages={items!r}"
        )
    passages = [as_passage(item) for item in items]
    if not passages:
        raise ValueError(
            "Expected at least one passage; the corpus is empty. "
            "Received: passages=[]"
        )
    seen = set(existing_ids)
    for passage in passages:
        if passage.id in seen:
            raise ValueError(
                "Passage ids must be unique within an index. "
                f"Received: duplicate id={passage.id!r}"
            )
        seen.add(passage.id)
    return passages


def passage_text(passage):
    """The text that is encoded for a passage: `"title. text"` or `text`."""
    if passage.title:
        return f"{passage.title}. {passage.text}"
    return passage.text


def check_texts(texts):
    """Returns `texts` as a list of str, or raises a clear error."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "Expected a list of strings, not a single string. "
            f"Received: texts={texts!r}"
        )
    texts = list(texts)
    if not texts:
        raise ValueError("Expected at least one text. Received: texts=[]")
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                f"Every text must be a Python string. Received: text={text!r}"
            )
    return texts
