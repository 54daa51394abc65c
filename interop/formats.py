"""The model files interop reads and writes, registered with funcdl's format table.

| name | format | needs an architecture (``--arch``) |
| --- | --- | --- |
| ``*.pt`` / ``*.pth`` | PyTorch state dict (``weights_only=True``) | yes |
| ``*.pt2`` | ``torch.export`` program | no (written by funcdl) |
| ``*.safetensors`` | PyTorch state dict (funcdl's own when its metadata says so) | without funcdl metadata |
| ``*.keras`` / ``*.h5`` | Keras model (safe mode) | no |
| ``*.weights.h5`` | Keras weights | yes |
| a folder (output) | TensorFlow SavedModel | - |

Each is a :class:`funcdl.io.formats.Format` named in the ``funcdl.formats``
entry-point group of ``pyproject.toml``; frameworks are imported only when a
file needs them.
"""
from collections.abc import Sequence
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
    return keras.load_keras_file(path, unsafe=unsafe)


def _read_keras_weights(path: Path, model: Any, input_shape: Sequence[int] | None, unsafe: bool) -> tuple:
    if model is None:
        raise ConfigError(f"{path} holds Keras weights only; pass --arch (a zoo model name or a .funcdl file)")
    model, variables = keras.load_keras_weights(path, model, input_shape)
    return model, variables, input_shape


def _write_saved_model(path: Path, model: Any, variables: Any, input_shape: Sequence[int]) -> None:
    tensorflow.to_saved_model(model, variables, path, input_shape)


TORCH = Format("torch", pytorch.SUFFIXES, _read_torch, pytorch.save_torch_file)
KERAS = Format("keras", (".keras", ".h5", ".hdf5"), _read_keras, keras.save_keras_file)
KERAS_WEIGHTS = Format("keras-weights", (".weights.h5",), _read_keras_weights, keras.save_keras_weights)
SAVED_MODEL = Format("savedmodel", write=_write_saved_model, folder=True)
