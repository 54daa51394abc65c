"""Import refusals are one short line: the piece, its module path or node, the source line, and a pointer to
``funcdl convert --list-supported`` instead of the whole list; CLI errors name CLI options, never keyword arguments."""
import re

import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import keras as keras_bridge  # noqa: E402
from interop import pytorch  # noqa: E402

POINTER = "`funcdl convert --list-supported` lists"
KWARG = re.compile(r"\b[a-z_]+=[A-Za-z0-9'\"]")  # strict=False, input_shape=(...)


class Erf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.erf(self.fc(x))  # the line the message names


def assert_short(message, *parts):
    assert "\n" not in message and len(message) < 400, message
    assert POINTER in message and "Linear, Conv2d" not in message and "Activation, Add" not in message
    for part in parts:
        assert part in message, (part, message)


def test_unsupported_torch_function_names_its_node_and_source_line():
    with pytest.raises(ConversionError) as info:
        pytorch.from_torch(Erf().eval(), torch.zeros(2, 4))
    assert_short(str(info.value), "function", "erf", "(node erf)", "test_unsupported_messages.py",
                 "return torch.erf(self.fc(x))")


def test_unsupported_torch_module_names_its_path():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Hardshrink())).eval()
    with pytest.raises(ConversionError) as info:
        pytorch.from_torch(net, torch.zeros(2, 4))
    assert_short(str(info.value), "module 1.0 (Hardshrink)")


def test_unsupported_aten_op_names_its_node_and_source_line(tmp_path):
    torch.export.save(torch.export.export(Erf().eval(), (torch.zeros(2, 4),)), str(tmp_path / "erf.pt2"))
    with pytest.raises(ConversionError) as info:
        pytorch.from_exported(tmp_path / "erf.pt2")
    assert_short(str(info.value), "aten.erf", "(node erf)", "test_unsupported_messages.py")


def test_unsupported_keras_layers_are_named_with_their_path():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.UnitNormalization(name="unit")],
                             name="inner")
    x = keras.Input((4,))
    with pytest.raises(ConversionError) as info:
        keras_bridge.from_keras(keras.Model(x, inner(x)))
    assert_short(str(info.value), "'inner/unit' (UnitNormalization)")


def test_cli_refusals_name_cli_options_never_keyword_arguments(tmp_path, capsys):
    torch.export.save(torch.export.export(Erf().eval(), (torch.zeros(2, 4),)), str(tmp_path / "erf.pt2"))
    torch.save(Erf().state_dict(), str(tmp_path / "erf.pt"))
    from safetensors.torch import save_file
    save_file(Erf().state_dict(), str(tmp_path / "erf.safetensors"))
    for source in ("erf.pt2", "erf.pt", "erf.safetensors"):
        assert main(["convert", str(tmp_path / source), str(tmp_path / "out.funcdl")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and not KWARG.search(err), err
        assert POINTER in err or "--arch" in err, err
