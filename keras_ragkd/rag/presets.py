"""Relocatable model folders (keras-hub's preset layout) for RAG task models.

A folder holds `config.json` (the Keras config, with the retriever's index
named relative to the folder), `model.weights.h5`, `assets/` (what layers
such as keras-hub tokenizers keep outside their config: vocabularies) and
`index/` (a copy of the saved `PassageIndex`), so it loads after being moved
or copied anywhere.
"""

import json
import os
import shutil

import keras

from keras_ragkd.rag.exporting import retrievers_of
from keras_ragkd.rag.exporting import write_atomically
from keras_ragkd.retrieval.index_files import MANIFEST_FILE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
INDEX_FOLDER = "index"
ASSETS_FOLDER = "assets"
PRESET_FORMAT = "keras_ragkd.rag_preset.v1"


def _retriever_configs(config):
    """Every serialized `PassageRetriever` config dict inside `config`."""
    if isinstance(config, dict):
        if config.get("class_name") == "PassageRetriever" and "config" in config:
            yield config["config"]
        for value in config.values():
            yield from _retriever_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from _retriever_configs(value)


def _layers_with_assets(model):
    """Layers that keep assets (e.g. tokenizer vocabularies), in a fixed order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if hasattr(layer, "save_assets") and hasattr(layer, "load_assets")
    ]


def _copy_saved_index(index, destination):
    """Copies the saved files of `index` (manifest + its data folder)."""
    if index.directory is None or index.has_unsaved_changes:
        raise ValueError(
            "A model folder holds a copy of the saved index; call "
            "`index.save(directory)` first. Received: "
            f"index.directory={index.directory!r}, "
            f"index.has_unsaved_changes={index.has_unsaved_changes}"
        )
    with open(os.path.join(index.directory, MANIFEST_FILE), encoding="utf-8") as f:
        data_folder = json.load(f)["data_folder"]
    os.makedirs(destination)
    shutil.copytree(
        os.path.join(index.directory, data_folder), os.path.join(destination, data_folder)
    )
    shutil.copy2(os.path.join(index.directory, MANIFEST_FILE), destination)


def save_rag_preset(model, preset_dir):
    """Writes `model` to a relocatable folder, atomically.

    The model must have one retriever over a saved index (the folder gets a
    copy of it). A crash mid-write leaves any previous folder loadable.

    Args:
        model: a `RagQuestionAnswerer`.
        preset_dir: the destination folder (replaced if it exists).

    Returns:
        The absolute folder path.
    """
    retrievers = retrievers_of(model)
    if len(retrievers) != 1:
        raise ValueError(
            "A model folder holds one index, so the model needs exactly one "
            f"PassageRetriever. Received: {len(retrievers)} retrievers"
        )
    config = keras.saving.serialize_keras_object(model)
    for retriever_config in _retriever_configs(config):
        retriever_config["index"] = INDEX_FOLDER

    def write(staging):
        _copy_saved_index(retrievers[0].index, os.path.join(staging, INDEX_FOLDER))
        with open(os.path.join(staging, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump({"format": PRESET_FORMAT, "model": config}, f)
        model.save_weights(os.path.join(staging, WEIGHTS_FILE))
        for number, layer in enumerate(_layers_with_assets(model)):
            folder = os.path.join(staging, ASSETS_FOLDER, str(number))
            os.makedirs(folder)
            layer.save_assets(folder)

    return write_atomically(preset_dir, write)


def load_rag_preset(preset_dir):
    """Loads a folder written by `save_rag_preset`.

    Args:
        preset_dir: the model folder.

    Returns:
        The model, its retriever reading the folder's own index.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    try:
        with open(config_path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{config_path!r} is not a readable model folder config ({error}). "
            f"Received: preset_dir={preset_dir!r}"
        ) from None
    if not isinstance(content, dict) or content.get("format") != PRESET_FORMAT:
        raise ValueError(
            f"{config_path!r} is not a keras_ragkd model folder (expected "
            f"format {PRESET_FORMAT!r}). Received: "
            f"format={content.get('format') if isinstance(content, dict) else None!r}"
        )
    config = content["model"]
    for retriever_config in _retriever_configs(config):
        if retriever_config.get("index") != INDEX_FOLDER:
            raise ValueError(
                "A model folder's retriever must read the folder's own index. "
                f"Received: index={retriever_config.get('index')!r} in {config_path!r}"
            )
        retriever_config["index"] = os.path.join(preset_dir, INDEX_FOLDER)
    model = keras.saving.deserialize_keras_object(config)
    for number, layer in enumerate(_layers_with_assets(model)):
        layer.load_assets(os.path.join(preset_dir, ASSETS_FOLDER, str(number)))
    model.load_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    return model
