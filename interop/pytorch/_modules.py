"""Small torch modules that ``to_torch`` uses where torch.nn has no single equivalent of a funcdl layer.

Imported only by the PyTorch bridge, after torch is known to be installed. The
recurrent classes subclass torch's own, so their ``state_dict`` keys are
torch's (``weight_ih_l0`` ...) and a plain ``nn.LSTM`` loads them.
"""
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


class _BatchFirstRecurrent:
    """Mixin: the torch layer with ``batch_first=True``, returning the output sequence (B, T, H) or,
    unless ``return_sequences``, its last step (B, H)."""

    def __init__(self, *args, return_sequences=False, **kwargs):
        super().__init__(*args, batch_first=True, **kwargs)
        self.return_sequences = return_sequences

    def forward(self, x):
        return _last_or_all(super().forward(x)[0], self.return_sequences)


class LSTM(_BatchFirstRecurrent, nn.LSTM):  # type: ignore[misc]  # forward(x) only: no initial state
    """``nn.LSTM(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


class GRU(_BatchFirstRecurrent, nn.GRU):  # type: ignore[misc]
    """``nn.GRU(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


class RNN(_BatchFirstRecurrent, nn.RNN):  # type: ignore[misc]
    """``nn.RNN(batch_first=True)`` returning the output sequence (B, T, H) or its last step (B, H)."""


RECURRENT = (LSTM, GRU, RNN)
LEAVES = (Permute, Reshape) + RECURRENT

