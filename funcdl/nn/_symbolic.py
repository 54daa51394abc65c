"""Symbolic tensors: build a Graph Keras-style, by calling layers on ``Input``s.

    x = nn.Input((32, 32, 3), name="image")
    y = nn.Conv2D(16, 3, name="conv1")(x)     # a Symbol: conv1's output; nothing is computed
    model = nn.Graph(inputs=x, outputs=y)

A layer called on an :class:`Input` or a :class:`Symbol` (or a list of them, for
a merge layer) records the call and returns a Symbol instead of computing; the
same layer called on arrays computes as usual (``funcdl.nn._base`` routes the
call). ``Graph`` turns the recorded calls into its named nodes.
"""
import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from funcdl.errors import ConfigError

DTYPES = ("float32", "float16", "bfloat16", "int32", "uint8", "bool")
_ORDER = itertools.count()  # calls are numbered as they are made: an order in which every input comes first


@dataclasses.dataclass(frozen=True)
class Input:
    """An input of a Graph: a name, the shape of one example (no batch axis) and a dtype.

    Used two ways: in the symbolic API as the tensor layers are first called on
    (``x = Input((32, 32, 3)); y = Conv2D(16, 3)(x)``), and in the node-list
    form as the declaration ``Graph(inputs=[Input((32, 32, 3), name="image")], ...)``.

    Args:
      shape: one example's shape, e.g. (32, 32, 3); ``None`` for a size that may vary, or ``shape=None``
        for any shape. A declared size is checked when the graph is applied.
      name: how nodes refer to it; default ``"input"`` (``"input_1"``, ... for further unnamed inputs).
      dtype: one of ``DTYPES`` ('int32' for token ids); what shape inference and ``init`` samples use.
    """
    shape: tuple[int | None, ...] | None = None
    name: str | None = None
    dtype: str = "float32"

    def __post_init__(self):
        if self.shape is not None:
            if isinstance(self.shape, int) and not isinstance(self.shape, bool):
                object.__setattr__(self, "shape", (self.shape,))
            if not isinstance(self.shape, (tuple, list)) or not all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in self.shape):
                raise ConfigError(f"Input shape must be a tuple of positive sizes (or None), got {self.shape!r}")
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"Input name must be a string, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"Input dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., "shape": [...] or null, "dtype": ...}``."""
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: Any) -> "Input":
        """The Input of ``to_config`` output, checked (it may come from a file)."""
        if not isinstance(config, dict) or not set(config) <= {"name", "shape", "dtype"}:
            raise ConfigError(f"a graph input must be {{'name', 'shape', 'dtype'}}, got {short(config)}")
        shape = config.get("shape")
        return cls(tuple(shape) if isinstance(shape, list) else shape, config.get("name"),
                   config.get("dtype", "float32"))


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """One recorded layer call: the layer, what it was called on (Inputs and Symbols), its place in time."""
    layer: Any
    args: tuple[Any, ...]
    order: int


class Symbol:
    """A layer's output while a graph is being built (no value, no shape: just where it comes from).

    ``symbol[i]`` (or ``symbol["key"]``) is output ``i`` of a layer that returns a tuple (or dict).
    """
    __slots__ = ("call", "index")

    def __init__(self, call: Call, index: int | str | None = None):
        self.call, self.index = call, index

    def __getitem__(self, index: int | str) -> "Symbol":
        if self.index is not None or isinstance(index, bool) or not isinstance(index, (int, str)):
            raise ConfigError(f"a symbolic tensor can be indexed once, by an int or a string; got {index!r}")
        return Symbol(self.call, index)

    def __repr__(self) -> str:
        suffix = "" if self.index is None else f"[{self.index!r}]"
        return f"Symbol({type(self.call.layer).__name__}{suffix})"


_NOT_AN_ARRAY = ("a symbolic tensor (a graph being built) holds no values: call funcdl layers on it, e.g. "
                 "nn.ReLU()(x) rather than nn.relu(x), nn.Add()([a, b]) rather than a + b")


def _refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise ConfigError(_NOT_AN_ARRAY)


# numpy and operators on a symbolic tensor get one clear line instead of a TypeError from deep inside
for _method in ("__array__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                "__truediv__", "__rtruediv__", "__matmul__", "__rmatmul__", "__neg__", "__pow__"):
    setattr(Input, _method, _refuse)
    setattr(Symbol, _method, _refuse)


def is_symbolic(value: Any) -> bool:
    """Whether ``value`` is an Input or a Symbol, or a non-empty list/tuple of them."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, (Input, Symbol)) for v in value)
    return isinstance(value, (Input, Symbol))


def symbolic_call(layer: Any, x: Any, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """Record ``layer(x)`` for a graph; returns its Symbol (a tuple or dict of them for a multi-output Graph)."""
    if args or kwargs:
        raise ConfigError(f"{type(layer).__name__} called on a symbolic tensor takes only its input; "
                          f"got {len(args)} more arguments and keywords {sorted(kwargs)}")
    call = Call(layer, tuple(x) if isinstance(x, (list, tuple)) else (x,), next(_ORDER))
    structure: Callable[[Callable[[Any], Symbol]], Any] | None = getattr(layer, "symbolic_outputs", None)
    if structure is None:
        return Symbol(call)
    return structure(lambda index: Symbol(call, index))


def short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters, for error messages about values read from files."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
