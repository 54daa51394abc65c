"""Read and write any supported model file by its name: funcdl, PyTorch, Keras, SavedModel.

| name | format | needs an architecture (``arch``) |
| --- | --- | --- |
| ``*.funcdl`` | funcdl model file (safetensors + architecture) | no |
| ``*.safetensors`` | funcdl's own when it says so, else PyTorch state dict | torch files without funcdl metadata |
| ``*.pt`` / ``*.pth`` | PyTorch state dict (``weights_only=True``) | yes |
| ``*.pt2`` | ``torch.export`` program | no (written by funcdl) |
| ``*.keras`` / ``*.h5`` | Keras model (safe mode) | no |
| ``*.weights.h5`` | Keras weights | yes |
| a folder (output) | TensorFlow SavedModel | - |

Frameworks are imported only when a file needs them (``interop`` says which extra to install).
"""
import json
from pathlib import Path

from funcdl import models, nn
from funcdl.io import model_file as files
from funcdl.errors import ConfigError, FileFormatError

TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SUFFIXES = (".funcdl", ".safetensors") + TORCH_SUFFIXES + KERAS_SUFFIXES + (".weights.h5",)


def kind_of(path, writing=False):
    """'funcdl', 'torch', 'keras', 'keras-weights' or 'savedmodel' for ``path``."""
    name = str(path).lower().rstrip("/")
    if name.endswith(".funcdl"):
        return "funcdl"
    if name.endswith(".weights.h5"):
        return "keras-weights"
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    if name.endswith(".safetensors"):
        if writing or not Path(path).is_file():
            return "torch" if writing else "funcdl"
        return "funcdl" if "funcdl.format" in files.read_header(path)[0] else "torch"
    if writing and (Path(path).is_dir() or not Path(name).suffix or str(path).endswith("/")):
        return "savedmodel"
    if not writing and Path(path).is_dir():
        raise FileFormatError(f"{path} is a folder; funcdl reads SavedModels it cannot convert back — "
                              "give a model file")
    raise FileFormatError(f"{path}: unknown model file type; use one of {', '.join(SUFFIXES)}"
                          + (" or a folder name for a SavedModel" if writing else ""))


def parse_input_shape(text):
    """(28, 28, 1) from '28,28,1'."""
    try:
        shape = tuple(int(part) for part in str(text).replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape must be positive integers like 28,28,1; got {text!r}")
    return shape


def architecture(arch, input_shape=None, num_classes=10):
    """(model, input_shape) from a zoo name, a funcdl model file, or an architecture JSON file."""
    if arch in models.MODELS:
        return models.get(arch, num_classes), tuple(input_shape or (28, 28, 1))
    path = Path(arch)
    if not path.is_file():
        raise ConfigError(f"--arch must be a zoo model ({', '.join(models.MODELS)}), a .funcdl file or an "
                          f"architecture .json file; {arch!r} is none of these")
    if path.suffix == ".json":
        try:
            return nn.from_config(json.loads(path.read_text())), input_shape
        except json.JSONDecodeError as err:
            raise FileFormatError(f"{path} is not valid JSON: {err}") from None
    model, _, recorded = files.load_model(path)
    return model, tuple(input_shape or recorded or ())


def load(path, arch=None, input_shape=None, unsafe=False, num_classes=10):
    """``(model, variables, input_shape)`` from any supported file (see the module table)."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path} does not exist")
    kind = kind_of(path)
    model, shape = architecture(arch, input_shape, num_classes) if arch else (None, input_shape)
    if kind == "funcdl":
        loaded, variables, recorded = files.load_model(path)
        return loaded, variables, tuple(shape or recorded or ()) or None
    if kind == "torch" and model is None and path.suffix.lower() in (".pt", ".pth"):
        raise ConfigError(f"{path} is a PyTorch state dict, which carries no architecture; pass --arch "
                          "(a zoo model name, a .funcdl file or an architecture .json)")
    if kind == "torch":
        from interop import pytorch
        return pytorch.load_torch_model(path, model, shape)
    if kind == "keras":
        from interop import keras
        return keras.load_keras_file(path, unsafe=unsafe)
    from interop import keras
    if model is None:
        raise ConfigError(f"{path} holds Keras weights only; pass --arch (a zoo model name or a .funcdl file)")
    model, variables = keras.load_keras_weights(path, model, shape)
    return model, variables, shape


def check_destination(path):
    """The format ``path`` would be written in; FileFormatError for an unknown type or an unwritable folder."""
    kind = kind_of(path, writing=True)
    files.check_writable(path)
    return kind


def save(path, model, variables, input_shape):
    """Write ``model`` to ``path`` in the format its name asks for; nothing partial is left on failure."""
    if not input_shape:
        raise ConfigError(f"the input shape is unknown; pass --input-shape to write {path}")
    kind = check_destination(path)
    try:
        _write(kind, path, model, variables, input_shape)
    except OSError as err:  # the framework writers' own I/O (a full disk, a folder turned read-only)
        raise files.write_error(path, err) from err
    return kind


def _write(kind, path, model, variables, input_shape):
    if kind == "funcdl":
        files.save_model(path, model, variables, input_shape=input_shape)
    elif kind == "torch":
        from interop import pytorch
        pytorch.save_torch_file(path, model, variables, input_shape)
    elif kind == "keras":
        from interop import keras
        keras.save_keras_file(path, model, variables, input_shape)
    elif kind == "keras-weights":
        from interop import keras
        keras.save_keras_weights(path, model, variables, input_shape)
    else:
        from interop import tensorflow
        tensorflow.to_saved_model(model, variables, path, input_shape)
