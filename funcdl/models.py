"""The model zoo: the classic MNIST models as Sequential architectures.

Every model takes NHWC images of any size its layers allow and returns logits.
"""
from collections.abc import Callable

from funcdl import nn
from funcdl.errors import ConfigError, choices_message


def mlp(num_classes: int = 10, hidden: int = 128) -> nn.Sequential:
    """Flatten -> Dense(hidden) -> relu -> Dense(num_classes): 784-128-10 on MNIST (101,770 params)."""
    return nn.Sequential([nn.Flatten(), nn.Dense(hidden), nn.relu, nn.Dense(num_classes)])


def cnn(num_classes: int = 10, dropout: tuple[float, float] = (0.25, 0.5)) -> nn.Sequential:
    """conv32-conv64-maxpool-dropout-dense128-dropout-dense: the classic Keras/PyTorch MNIST CNN.

    1,199,882 params on 28x28x1 inputs.
    """
    return nn.Sequential([
        nn.Conv2D(32, 3), nn.relu,
        nn.Conv2D(64, 3), nn.relu,
        nn.MaxPool2D(2), nn.Dropout(dropout[0]),
        nn.Flatten(), nn.Dense(128), nn.relu, nn.Dropout(dropout[1]),
        nn.Dense(num_classes),
    ])


def lstm(num_classes: int = 10, hidden: int = 128) -> nn.Sequential:
    """Image rows as a sequence: (B, H, W, C) -> LSTM(hidden) -> Dense(num_classes)."""
    return nn.Sequential([nn.ImageRows(), nn.LSTM(hidden), nn.Dense(num_classes)])


def gru(num_classes: int = 10, hidden: int = 128) -> nn.Sequential:
    """Image rows as a sequence: (B, H, W, C) -> GRU(hidden) -> Dense(num_classes)."""
    return nn.Sequential([nn.ImageRows(), nn.GRU(hidden), nn.Dense(num_classes)])


MODELS: dict[str, Callable[..., nn.Sequential]] = {"mlp": mlp, "cnn": cnn, "lstm": lstm, "gru": gru}


def get(name: str, num_classes: int = 10) -> nn.Sequential:
    """The zoo model called ``name`` for ``num_classes`` outputs."""
    if name not in MODELS:
        raise ConfigError(choices_message("model", name, MODELS))
    return MODELS[name](num_classes=num_classes)
