"""Small torch modules that ``to_torch`` uses where torch.nn has no single equivalent of a funcdl layer.

Imported only by the PyTorch bridge, after torch is known to be installed. The
recurrent classes subclass torch's own, so their ``state_dict`` keys are
torch's (``weight_ih_l0`` ...) and a plain ``nn.LSTM`` loads them.
"""
import torch
from torch import nn


class Permute(nn.Module):
    """``x.permute(*dims)``; (0, 2, 3, 1) turns NCHW into funcdl's NHWC."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(*self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


class Reshape(nn.Module):
    """``x.reshape(batch, *shape)``, keeping the batch axis."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


def _last_or_all(out, return_sequences):
    return out if return_sequences else out[:, -1]


_MERGES = {"concat": lambda f, b: torch.cat([f, b], dim=-1), "sum": torch.add, "mul": torch.mul,
           "ave": lambda f, b: (f + b) / 2, None: lambda f, b: (f, b)}


class _BatchFirstRecurrent:
    """Mixin: the torch layer with ``batch_first=True``, returning the output sequence (B, T, H) or,
    unless ``return_sequences``, its last step (B, H).

    With ``bidirectional=True`` the two directions (torch's output halves, both aligned with the input; the
    backward one's final state is at step 0) are merged by ``merge_mode``: 'concat', 'sum', 'mul', 'ave' or
    None (a tuple), as ``funcdl.nn.Bidirectional``.
    """

    def __init__(self, *args, return_sequences=False, merge_mode="concat", **kwargs):
        super().__init__(*args, batch_first=True, **kwargs)
        self.return_sequences, self.merge_mode = return_sequences, merge_mode

    def forward(self, x):
        out = super().forward(x)[0]
        if not self.bidirectional:
            return _last_or_all(out, self.return_sequences)
        forward, backward = out[..., :self.hidden_size], out[..., self.hidden_size:]
        if not self.return_sequences:
            forward, backward = forward[:, -1], backward[:, 0]
        return _MERGES[self.merge_mode](forward, backward)


class LSTM(_BatchFirstRecurrent, nn.LSTM):  # type: ignore[misc]  # forward(x) only: no initial state
    """``nn.LSTM(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


class GRU(_BatchFirstRecurrent, nn.GRU):  # type: ignore[misc]
    """``nn.GRU(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


class RNN(_BatchFirstRecurrent, nn.RNN):  # type: ignore[misc]
    """``nn.RNN(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


class RepeatVector(nn.Module):
    """(B, F) -> (B, n, F): each example repeated ``n`` times along a new time axis."""

    def __init__(self, n):
        super().__init__()
        self.n = int(n)

    def forward(self, x):
        return x.unsqueeze(1).expand(-1, self.n, -1)

    def extra_repr(self):
        return f"n={self.n}"


class ChannelGather(nn.Module):
    """``x[:, index]``: NCHW channels reordered (tf's depth-to-space order into torch's PixelShuffle order)."""

    def __init__(self, index):
        super().__init__()
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x):
        return x.index_select(1, self.index)


class Exponential(nn.Module):
    """``exp(x)`` (Keras' 'exponential' activation; torch.nn has no module for it)."""

    def forward(self, x):
        return torch.exp(x)


RECURRENT = (LSTM, GRU, RNN)
LEAVES = (Permute, Reshape, RepeatVector, ChannelGather, Exponential) + RECURRENT

