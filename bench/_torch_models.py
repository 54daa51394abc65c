"""The benchmark models built natively in PyTorch, and funcdl's initial weights copied into them.

Used for the ResNet (``interop.pytorch.to_torch`` converts Sequential chains
only) and as the fallback when ``to_torch`` fails. Each torch module is named
after the funcdl pytree path it mirrors (``layers_1`` <-> funcdl
``params['layers_1']``; the ResNet's graph nodes ``stage2_block1_conv1`` <->
``params['stage2_block1_conv1']``); the layouts (kernel transposes, recurrent
names and gate order) are ``interop.layouts``', and every tensor's shape is
checked before it is copied.

Inputs are NCHW. The CNN flattens after permuting back to NHWC, so its first
Dense kernel needs no row permutation.
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from funcdl.errors import ConversionError
from funcdl.io import flatten_variables
from interop import layouts


class Permute(nn.Module):
    """``x.permute(*dims)``; (0, 2, 3, 1) turns NCHW into NHWC."""

    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class Rows(nn.Module):
    """(B, 1, H, W) -> (B, H, W): image rows as time steps (funcdl's ImageRows for one channel)."""

    def forward(self, x):
        return x.reshape(x.shape[0], x.shape[2], -1)


class LastLSTM(nn.LSTM):
    """``nn.LSTM(batch_first=True)`` returning the last step's output (B, H)."""

    def forward(self, x):
        return super().forward(x)[0][:, -1]


class LastGRU(nn.GRU):
    """``nn.GRU(batch_first=True)`` returning the last step's output (B, H)."""

    def forward(self, x):
        return super().forward(x)[0][:, -1]


class ResNet(nn.Module):
    """Torch twin of ``fd.models.resnet(depth)``: one submodule per funcdl graph node, under the node's name.

    The forward pass follows the graph: stem conv-BN-relu; per block conv1-bn1-relu-conv2-bn2 plus the
    shortcut (``proj_conv``-``proj_bn`` where the shape changes), relu; global average pooling; ``logits``.
    """

    def __init__(self, depth=8, num_classes=10, width=16, in_channels=3):
        super().__init__()
        self.add_module("stem_conv", nn.Conv2d(in_channels, width, 3, padding=1, bias=False))
        self.add_module("stem_bn", nn.BatchNorm2d(width))
        self.blocks = []  # (node name prefix, projects)
        features = width
        for stage, stage_features in enumerate((width, 2 * width, 4 * width), start=1):
            for block in range(1, (depth - 2) // 6 + 1):
                strides = 2 if stage > 1 and block == 1 else 1
                self._block(f"stage{stage}_block{block}", features, stage_features, strides)
                features = stage_features
        self.add_module("logits", nn.Linear(features, num_classes))

    def _block(self, name, in_features, features, strides):
        self.add_module(f"{name}_conv1", nn.Conv2d(in_features, features, 3, strides, padding=1, bias=False))
        self.add_module(f"{name}_bn1", nn.BatchNorm2d(features))
        self.add_module(f"{name}_conv2", nn.Conv2d(features, features, 3, 1, padding=1, bias=False))
        self.add_module(f"{name}_bn2", nn.BatchNorm2d(features))
        project = strides != 1 or in_features != features
        if project:
            self.add_module(f"{name}_proj_conv", nn.Conv2d(in_features, features, 1, strides, bias=False))
            self.add_module(f"{name}_proj_bn", nn.BatchNorm2d(features))
        self.blocks.append((name, project))

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem_conv(x)))
        for name, project in self.blocks:
            node = self.get_submodule
            y = torch.relu(node(f"{name}_bn1")(node(f"{name}_conv1")(x)))
            y = node(f"{name}_bn2")(node(f"{name}_conv2")(y))
            shortcut = node(f"{name}_proj_bn")(node(f"{name}_proj_conv")(x)) if project else x
            x = torch.relu(y + shortcut)
        return self.logits(x.mean((2, 3)))


def _layers(*named):
    return nn.Sequential(OrderedDict(named))


def build(name):
    """The torch module of benchmark model ``name`` (fresh weights; see ``copy_weights``)."""
    if name == "mlp":
        return _layers(("layers_0", nn.Flatten()), ("layers_1", nn.Linear(784, 128)), ("layers_2", nn.ReLU()),
                       ("layers_3", nn.Linear(128, 10)))
    if name == "cnn":
        return _layers(("layers_0", nn.Conv2d(1, 32, 3)), ("layers_1", nn.ReLU()),
                       ("layers_2", nn.Conv2d(32, 64, 3)), ("layers_3", nn.ReLU()),
                       ("layers_4", nn.MaxPool2d(2)), ("layers_5", nn.Dropout(0.25)),
                       ("to_nhwc", Permute(0, 2, 3, 1)), ("layers_6", nn.Flatten()),
                       ("layers_7", nn.Linear(9216, 128)), ("layers_8", nn.ReLU()), ("layers_9", nn.Dropout(0.5)),
                       ("layers_10", nn.Linear(128, 10)))
    if name in ("lstm", "gru"):
        cell = LastLSTM if name == "lstm" else LastGRU
        return _layers(("layers_0", Rows()), ("layers_1", cell(28, 128, batch_first=True)),
                       ("layers_2", nn.Linear(128, 10)))
    if name == "resnet":
        return ResNet(depth=8)
    raise KeyError(f"no torch model {name!r}")


_NAMES = {("params", "scale"): "weight", ("params", "bias"): "bias", ("params", "kernel"): "weight",
          ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def torch_tensor_for(module, path, array):
    """(torch state-dict key, numpy array in torch layout) for funcdl leaf ``path`` ('params/layers_1/kernel')."""
    collection, *owner, leaf = path.split("/")
    submodule = module.get_submodule(".".join(owner))
    if isinstance(submodule, nn.RNNBase):
        name = layouts.TORCH_RECURRENT[leaf].format(k=0)
        array = layouts.linear_to_torch(array) if array.ndim == 2 else array
    else:
        name = _NAMES[(collection, leaf)]
        if leaf == "kernel":
            array = layouts.kernel_to_torch(array)
    return ".".join(owner + [name]), np.ascontiguousarray(array)


def copy_weights(module, variables):
    """Load funcdl ``variables`` into ``module`` (built by ``build``); every tensor shape-checked.

    Returns:
      ``module`` with the weights.
    Raises:
      ConversionError: a tensor with no torch twin or another shape, or a torch tensor left unset.
    """
    state = module.state_dict()
    filled = set()
    for path, array in flatten_variables(variables).items():
        key, value = torch_tensor_for(module, path, np.asarray(array, np.float32))
        if key not in state:
            raise ConversionError(f"{path} -> {key}: no such torch tensor")
        state[key] = torch.from_numpy(layouts.checked(value, tuple(state[key].shape), f"{path} -> {key}",
                                                      "bench torch model").copy())
        filled.add(key)
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    if filled != expected:
        raise ConversionError(f"torch tensors left unset: {sorted(expected - filled)[:4]}")
    module.load_state_dict(state)
    return module
