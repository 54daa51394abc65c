"""The model zoo: the classic MNIST models as Sequential architectures, and the CIFAR ResNet as a Graph.

Every model takes NHWC images of any size its layers allow and returns logits.
"""
from collections.abc import Callable, Sequence
from typing import Any

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


def _conv_bn(x: Any, features: int, kernel: int, strides: int, conv: str, bn: str) -> Any:
    """conv (no bias, He init, torch's symmetric padding) then BatchNorm, nodes named ``conv`` and ``bn``."""
    x = nn.Conv2D(features, kernel, strides, padding=kernel // 2, use_bias=False, kernel_init="he_normal",
                  name=conv)(x)
    return nn.BatchNorm(name=bn)(x)


def basic_block(x: Any, in_features: int, features: int, strides: int, name: str) -> Any:
    """The residual basic block: conv3x3-BN-relu-conv3x3-BN, plus the shortcut, then relu.

    The shortcut is ``x`` itself, or a projection (1x1 conv with ``strides``, then BN) where the shape
    changes (``strides != 1`` or ``in_features != features``).

    Args:
      x: the block's input, a symbolic tensor (``nn.Input`` or a layer's output) of ``in_features`` channels.
      features: output channels; strides: of the first conv and of the projection.
      name: prefix of the block's nodes: ``{name}_conv1``, ``{name}_bn1``, ``{name}_relu1``,
        ``{name}_conv2``, ``{name}_bn2``, [``{name}_proj_conv``, ``{name}_proj_bn``], ``{name}_add``,
        ``{name}_out``.
    Returns:
      the block's output (symbolic).
    """
    y = nn.ReLU(name=f"{name}_relu1")(_conv_bn(x, features, 3, strides, f"{name}_conv1", f"{name}_bn1"))
    y = _conv_bn(y, features, 3, 1, f"{name}_conv2", f"{name}_bn2")
    shortcut = x
    if strides != 1 or in_features != features:
        shortcut = _conv_bn(x, features, 1, strides, f"{name}_proj_conv", f"{name}_proj_bn")
    return nn.ReLU(name=f"{name}_out")(nn.Add(name=f"{name}_add")([y, shortcut]))


def resnet(depth: int = 20, num_classes: int = 10, input_shape: Sequence[int] | None = None,
           width: int = 16) -> nn.Graph:
    """The CIFAR ResNet of He et al. (2015), section 4.2, as a Graph: ResNet-8, -20, -56, ... (depth 6n+2).

    A 3x3 conv stem of ``width`` channels (``stem_conv``, ``stem_bn``, ``stem_relu``); three stages of n
    basic blocks (``stage{s}_block{b}_...``, see ``basic_block``) with width, 2x and 4x channels, the first
    block of stages 2 and 3 with stride 2 and a projection shortcut; global average pooling (``pool``) and
    a Dense (``logits``). ResNet-20 has 272,474 params (plus 1,568 BatchNorm statistics) for 10 classes: the
    paper's 0.27M (269,722 with its zero-padding shortcuts, 2,752 fewer than these projections).

    Args:
      depth: 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110).
      num_classes: outputs (logits).
      input_shape: one image's shape (e.g. (32, 32, 3)) to declare on the input; None takes any NHWC image.
      width: channels of the stem and the first stage.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"resnet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
    inputs = nn.Input(None if input_shape is None else tuple(input_shape), name="image")
    x = nn.ReLU(name="stem_relu")(_conv_bn(inputs, width, 3, 1, "stem_conv", "stem_bn"))
    features = width
    for stage, stage_features in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, (depth - 2) // 6 + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = basic_block(x, features, stage_features, strides, f"stage{stage}_block{block}")
            features = stage_features
    x = nn.GlobalAveragePooling2D(name="pool")(x)
    return nn.Graph(inputs=inputs, outputs=nn.Dense(num_classes, name="logits")(x))


MODELS: dict[str, Callable[..., nn.Layer]] = {"mlp": mlp, "cnn": cnn, "lstm": lstm, "gru": gru, "resnet": resnet}


def get(name: str, num_classes: int = 10) -> nn.Layer:
    """The zoo model called ``name`` for ``num_classes`` outputs."""
    if name not in MODELS:
        raise ConfigError(choices_message("model", name, MODELS))
    return MODELS[name](num_classes=num_classes)
