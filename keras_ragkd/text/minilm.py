"""Transitional: the MiniLM tokenizer moved to `keras_ragkd.models.minilm`.

Delete this module (and its two imports in `keras_ragkd/text/__init__.py`)
once the callers import `load_minilm_tokenizer` / `minilm_preset_path` from
`keras_ragkd.models`; until then these forward there (imported on call:
`models` depends on `text`, not the other way round).
"""


def load_minilm_tokenizer(sequence_length=None, preset=None):
    """Forwards to `keras_ragkd.models.load_minilm_tokenizer`."""
    from keras_ragkd.models.minilm import load_minilm_tokenizer as load

    return load(sequence_length=sequence_length, preset=preset)


def minilm_preset_path():
    """Forwards to `keras_ragkd.models.minilm_preset_path`."""
    from keras_ragkd.models.minilm import minilm_preset_path as path

    return path()
