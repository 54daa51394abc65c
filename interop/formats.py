"""The model files interop reads and writes, registered with funcdl's format table.

| name | format | needs an architecture (``--arch``) |
| --- | --- | --- |
| ``*.pt`` / ``*.pth`` | PyTorch state dict (``weights_only=True``) | yes |
| ``*.pt2`` | ``torch.export`` program | no (written by funcdl) |
| ``*.safetensors`` | PyTorch state dict (funcdl's own when its metadata says so) | without funcdl metadata |
| ``*.keras`` / ``*.h5`` | Keras model (safe mode) | no |
| ``*.weights.h5`` | Keras weights | yes |
| a folder (output) | TensorFlow SavedModel | - |

Every format but a ``.pt`` / ``.pth`` state dict also keeps the metadata funcdl records beside a model
(normalisation mean and std, dataset, classes): ``.pt2`` in its ``funcdl.json`` extra file, ``.safetensors``
in its header, ``.keras`` as a ``funcdl.json`` member of the zip, ``.h5`` / ``.weights.h5`` as an HDF5
attribute, a SavedModel in ``assets.extra/funcdl.json``.

Each is a :class:`funcdl.io.formats.Format` named in the ``funcdl.formats``
entry-point group of ``pyproject.toml``; frameworks are imported only when a
file needs them.
"""
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from funcdl.errors import ConfigError
from funcdl.io.formats import Format
from interop import keras, pytorch, tensorflow


def _read_torch(path: Path, model: Any, input_shape: Sequence[int] | None, unsafe: bool) -> tuple:
    if model is None and path.suffix.lower() in (".pt", ".pth"):
        raise ConfigError(f"{path} is a PyTorch state dict, which carries no architecture; pass --arch "
                          "(a zoo model name, a .funcdl file or an architecture .json)")
    return pytorch.load_torch_model(path, model, input_shape)


def _read_keras(path: Path, model: Any, input_shape: Sequence[int] | None, unsafe: bool) -> tuple:
    if keras.is_keras2_weights_file(path):  # Keras 2 save_weights: an architecture is needed
        return _read_keras_weights(path, model, input_shape, unsafe)
    return keras.load_keras_file(path, unsafe=unsafe)


def _read_keras_weights(path: Path, model: Any, input_shape: Sequence[int] | None, unsafe: bool) -> tuple:
    if model is None:
        raise ConfigError(f"{path} holds Keras weights only; pass --arch (a zoo model name, a .funcdl file or an "
                          "architecture .json)")
    if input_shape is None:
        raise ConfigError(f"{path} holds Keras weights only; pass --input-shape too (or an --arch file that records "
                          "it)")
    model, variables = keras.load_keras_weights(path, model, input_shape)
    return model, variables, input_shape


def _write_torch(path: Path, model: Any, variables: Any, input_shape: Sequence[int],
                 metadata: Mapping[str, str]) -> bool:
    pytorch.save_torch_file(path, model, variables, input_shape, metadata=metadata)
    return pytorch.keeps_metadata(path)


def _write_keras(path: Path, model: Any, variables: Any, input_shape: Sequence[int],
                 metadata: Mapping[str, str]) -> bool:
    keras.save_keras_file(path, model, variables, input_shape, metadata=metadata)
    return True


def _write_keras_weights(path: Path, model: Any, variables: Any, input_shape: Sequence[int],
                         metadata: Mapping[str, str]) -> bool:
    keras.save_keras_weights(path, model, variables, input_shape, metadata=metadata)
    return True


TORCH = Format("torch", pytorch.SUFFIXES, _read_torch, _write_torch, metadata=pytorch.read_metadata)
KERAS = Format("keras", (".keras", ".h5", ".hdf5"), _read_keras, _write_keras, metadata=keras.read_metadata)
KERAS_WEIGHTS = Format("keras-weights", (".weights.h5",), _read_keras_weights, _write_keras_weights,
                       metadata=keras.read_metadata)
SAVED_MODEL = Format("savedmodel", write=tensorflow.write_saved_model, folder=True, entries=tensorflow.ENTRIES,
                     metadata=tensorflow.read_metadata, title="SavedModel")
