"""What the torch.fx reader knows about each traced value, shared by the reader and the converters.

A ``Value`` is what funcdl holds for one traced torch value; a ``Spec`` is a
funcdl layer to build. Layouts: an activation torch holds as a 4-D NCHW image
is held NHWC by funcdl (``layout='nchw'``); a 3-D (batch, channels, length)
sequence is held (batch, length, channels) (``'ncl'``); a time-first sequence
torch holds (time, batch, ...) after ``x.permute(1, 0, 2)`` is held batch-first
(``'tb'``). Flattening it gives funcdl features
in (H, W, C) order, recorded as ``perm`` (``interop.layouts.flatten_permutation``)
until a Linear absorbs it by permuting its kernel rows (per-feature norms
permute their vectors on the way).
"""
import dataclasses
import operator

from funcdl import nn
from funcdl.errors import ConversionError

# What from_torch reads, by kind: ``--list-supported`` prints each row, the README's tables hold them.
SUPPORTED_ROWS = (
    ("modules", "Linear, Conv1d, Conv2d, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvg/MaxPool1d/2d (output size dividing "
     "the input), BatchNorm1d (features or (N, C, L)), BatchNorm2d, LayerNorm, Dropout, Dropout1d/2d, Flatten, "
     "Unflatten, Embedding, LSTM/GRU/RNN (batch_first or time-first, bidirectional, stacked, zero initial state), "
     "Upsample (integer factors, nearest or bilinear), PixelShuffle, ZeroPad2d, Identity, the activations ReLU, "
     "ReLU6, LeakyReLU, ELU, SELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid, Sigmoid, Tanh, Softsign, Softplus, "
     "Softmax, LogSoftmax"),
    ("containers", "Sequential/ModuleList/ModuleDict and custom modules built from these"),
    ("graphs", "x + y, torch.add, x * y, x - y, torch.maximum/minimum (equal shapes), torch.cat, several outputs"),
    ("own parameters", "x @ self.w (+ self.b), torch.matmul, F.linear, F.conv1d/conv2d, x * self.scale + self.shift "
     "(one value per channel), arithmetic with numbers and buffers"),
    ("functions", "the F.* twins of the modules above, F.interpolate, F.pad (zeros), torch.flatten, "
     "x.view/reshape/flatten/squeeze/unsqueeze, permute/transpose (NCHW <-> NHWC, (N, C, L) <-> (N, L, C), "
     "time-first <-> batch-first), x.size(), torch.zeros initial states, out[:, -1] / out[-1] and h_n[-1] / h_n[-2] "
     "after LSTM/GRU/RNN"),
)
SUPPORTED = "; ".join(f"{kind}: {items}" for kind, items in SUPPORTED_ROWS)
SUPPORTED_ATEN = (
    ".pt2 ATen ops: conv1d/conv2d/convolution, linear, addmm/mm/matmul with a weight, batch_norm, "
    "_native_batch_norm_legit_no_training, max_pool1d/2d(_with_indices), avg_pool1d/2d, (_)adaptive_avg_pool1d/2d, "
    "adaptive_max_pool2d, mean over H and W, embedding, lstm/gru/rnn_tanh/rnn_relu (zero initial state; not "
    "decomposed), select, upsample_nearest2d/upsample_bilinear2d, pixel_shuffle, constant_pad_nd/pad, "
    "view/reshape/_unsafe_view/flatten/squeeze/unsqueeze, permute/transpose/t, add/sub/mul/div with tensors, "
    "weights or numbers, maximum/minimum, cat, clone/contiguous/alias/detach/dropout/feature_dropout (inference), "
    "zeros/new_zeros/full(0), relu, relu6/hardtanh(0, 6), leaky_relu, elu, selu, gelu, silu, mish, hardswish, "
    "hardsigmoid, sigmoid, tanh, softplus, (_)softmax, (_)log_softmax")
RECURRENT = (nn.LSTM, nn.GRU, nn.SimpleRNN)
# Layers that act on each time step alone, so out[:, -1] may be taken before them.
_TIMEWISE = (nn.Dense, nn.Dropout) + tuple(dict.fromkeys(row.layer for row in nn.TABLE
                                                          if row.elementwise and row.layer is not None))


@dataclasses.dataclass
class Value:
    """What funcdl holds for one traced torch value."""
    # 'tensor'; 'recurrent' (output, hidden) tuple; 'hidden' LSTM (h_n, c_n); 'state' h_n (L * D, B, H);
    # 'weight' a parameter, buffer or constant the forward reads (``key``); 'zeros' an all-zero initial state
    kind: str
    shape: tuple  # torch's shape
    end: int  # number of funcdl layers applied when this value was made
    layout: str = "plain"  # 'nchw': torch NCHW, funcdl NHWC; 'ncl': torch NCL, funcdl NLC; 'tb': time-first
    perm: object = None  # np.ndarray: funcdl feature j is torch feature perm[j]
    pad: tuple | None = None  # pending (top, bottom, left, right) padding from F.pad / ZeroPad2d
    pad_value: float = 0.0
    dtype: object = None
    rnn: tuple | None = None  # (cell, num_layers, directions) of the recurrent module behind a tuple value
    ref: str = "input"  # the funcdl graph node (or the input) that computes it
    key: str | None = None  # a weight's state-dict key (the reader's ``state_dict``)
    transposed: bool = False  # a 2-D weight read as ``w.t()`` / ``w.T``


@dataclasses.dataclass
class Spec:
    """A funcdl layer to build: its class and settings (mutable until the end)."""
    cls: type
    kwargs: dict
    name: str = ""  # the graph node's name (its params key when the model is a Graph)
    inputs: tuple = ()  # references of the nodes (or the input) it reads, in call order


LIST_SUPPORTED = "`funcdl convert --list-supported` lists what converts"


def source_line(node, library=""):
    """``' at File "net.py", line 7, in forward: return torch.erf(x)'``: the user's line torch.fx recorded for
    ``node`` (the last frame outside ``library``, torch's own folder), or ``''``."""
    lines = [line.strip() for line in (getattr(node, "stack_trace", None) or "").splitlines()]
    frames = [(line, lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else "")
              for i, line in enumerate(lines) if line.startswith("File ")]
    user = [frame for frame in frames if not (library and library in frame[0])]
    if not user:
        return ""
    head, code = user[-1]
    return f" at {head}: {code}" if code else f" at {head}"


def describe(node):
    """A readable name of what a node calls."""
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    if node.target is operator.getitem:
        return f"indexing {node.name}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"function {module + '.' if module else ''}{name}"


def last_step(reader, node, value):
    """``out[:, -1]`` of a sequence: make the recurrent layer behind it return its last step.

    Walks back from ``value`` through layers that act on each step alone; each must feed nothing else,
    since the recurrent layer's output changes shape.
    """
    value = reader.take(node, value)
    ref, allowed = value.ref, 0
    while ref in reader.by_name and reader.consumers(ref) <= allowed:
        spec = reader.by_name[ref]
        if spec.cls is nn.Bidirectional:
            raise ConversionError(f"{describe(node)}: out[:, -1] of a bidirectional LSTM/GRU/RNN pairs the forward "
                                  "direction's last step with the backward one's first, which funcdl has no layer "
                                  "for; use torch.cat((h_n[-2], h_n[-1]), dim=1) (both final states)")
        if spec.cls in RECURRENT and spec.kwargs["return_sequences"]:
            spec.kwargs["return_sequences"] = False
            return reader.derive(node, value, layout="plain")
        axis_ok = spec.kwargs.get("axis", -1) == -1 and spec.kwargs.get("num_axes", 1) == 1
        if len(spec.inputs) != 1 or not (spec.cls in _TIMEWISE or (
                spec.cls in (nn.Softmax, nn.LogSoftmax, nn.LayerNorm) and axis_ok)):
            break
        ref, allowed = spec.inputs[0], 1
    raise ConversionError(f"{describe(node)}: out[:, -1] is supported only on the output sequence of an LSTM/GRU/RNN "
                          "that feeds nothing else")
