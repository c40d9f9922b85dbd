"""Relocatable model folders (keras-hub's preset layout) for RAG task models.

A folder holds `config.json` (the Keras config, with the retriever's index
named relative to the folder), `model.weights.h5`, `assets/` (what layers
such as keras-hub tokenizers keep outside their config: vocabularies) and
`index/` (a copy of the saved `PassageIndex`), so it loads after being moved
or copied anywhere.

`config.json` is written last and lists every other file outside `index/`
(relative path, size, SHA-256; `index/` has its own checksummed manifest).
Loading checks that list before opening any file in it: a truncated or
corrupted file, or an entry leading outside the folder (`../x`), is refused
with a `ValueError` naming the file.
"""

import os
import shutil

import keras

from keras_ragkd.io_utils import check_files
from keras_ragkd.io_utils import file_record
from keras_ragkd.io_utils import is_member_name
from keras_ragkd.io_utils import read_json_record
from keras_ragkd.io_utils import write_folder
from keras_ragkd.io_utils import write_json
from keras_ragkd.rag.exporting import retrievers_of
from keras_ragkd.retrieval.index_files import MANIFEST_FILE
from keras_ragkd.retrieval.index_files import check_data_files
from keras_ragkd.retrieval.index_files import read_manifest
from keras_ragkd.retrieval.passage_index import FORMAT_VERSION as INDEX_FORMAT_VERSION
from keras_ragkd.validation import is_integer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
INDEX_FOLDER = "index"
ASSETS_FOLDER = "assets"
PRESET_FORMAT = "keras_ragkd.rag_preset.v1"
# Retriever layers whose config names the index folder (a `HybridRetriever` is a
# `PassageRetriever`).
RETRIEVER_CLASSES = ("PassageRetriever", "HybridRetriever")


def _retriever_configs(config):
    """Every serialized `PassageRetriever` config dict inside `config`."""
    if isinstance(config, dict):
        if config.get("class_name") in RETRIEVER_CLASSES and "config" in config:
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
    # The checked manifest names only files of its own data folder; they are
    # copied with the umask's modes (not the source's), like any new file.
    manifest = read_manifest(index.directory, INDEX_FORMAT_VERSION)
    data_folder = manifest["data_folder"]
    os.makedirs(os.path.join(destination, data_folder))
    for entry in manifest["files"].values():
        shutil.copyfile(
            os.path.join(index.directory, data_folder, entry["path"]),
            os.path.join(destination, data_folder, entry["path"]),
        )
    shutil.copyfile(
        os.path.join(index.directory, MANIFEST_FILE), os.path.join(destination, MANIFEST_FILE)
    )


def _file_records(folder):
    """`{relative path: {"bytes", "sha256"}}` of the files under `folder`
    outside `index/`."""
    records = {}
    for root, folders, files in os.walk(folder):
        if root == folder and INDEX_FOLDER in folders:
            folders.remove(INDEX_FOLDER)
        for name in files:
            path = os.path.join(root, name)
            records[os.path.relpath(path, folder).replace(os.sep, "/")] = file_record(path)
    return records


def _check_files(preset_dir, files, config_path):
    """Checks the listed files (names first, then sizes and checksums)."""
    valid = isinstance(files, dict) and all(
        is_member_name(name, relative_path=True)
        and name.split("/")[0] != INDEX_FOLDER
        and isinstance(entry, dict)
        and is_integer(entry.get("bytes"), minimum=0)
        and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    )
    if not valid or WEIGHTS_FILE not in files:
        raise ValueError(
            "A model folder's config must list its files as relative paths inside "
            'the folder with {"bytes", "sha256"} (and the weights). Received: '
            f"files={files!r:.200} in {config_path!r}"
        )
    check_files(preset_dir, files, "model folder")


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
        model.save_weights(os.path.join(staging, WEIGHTS_FILE))
        for number, layer in enumerate(_layers_with_assets(model)):
            folder = os.path.join(staging, ASSETS_FOLDER, str(number))
            os.makedirs(folder)
            layer.save_assets(folder)
        content = {"format": PRESET_FORMAT, "model": config,
                   "files": _file_records(staging)}
        write_json(os.path.join(staging, CONFIG_FILE), content)

    return write_folder(preset_dir, write, kind="preset")


def load_rag_preset(preset_dir):
    """Loads a folder written by `save_rag_preset`.

    Args:
        preset_dir: the model folder.

    Returns:
        The model, its retriever reading the folder's own index.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    content = read_json_record(config_path, "model folder config", "`save_to_preset`",
                               PRESET_FORMAT, version_key="format")
    _check_files(preset_dir, content.get("files"), config_path)
    config = content.get("model")
    for retriever_config in _retriever_configs(config):
        if retriever_config.get("index") != INDEX_FOLDER:
            raise ValueError(
                "A model folder's retriever must read the folder's own index. "
                f"Received: index={retriever_config.get('index')!r} in {config_path!r}"
            )
        retriever_config["index"] = os.path.join(preset_dir, INDEX_FOLDER)
    # A damaged index is reported here, not wrapped in Keras' deserialization
    # errors (the retriever loads the index while the model is rebuilt).
    index_dir = os.path.join(preset_dir, INDEX_FOLDER)
    check_data_files(index_dir, read_manifest(index_dir, INDEX_FORMAT_VERSION),
                     verify_checksums=True)
    model = keras.saving.deserialize_keras_object(config)
    for number, layer in enumerate(_layers_with_assets(model)):
        layer.load_assets(os.path.join(preset_dir, ASSETS_FOLDER, str(number)))
    model.load_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    return model
