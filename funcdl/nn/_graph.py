"""Graph: a model as a directed acyclic graph of named layers (residual adds, branches, several inputs/outputs).

Two ways to build one, giving the same Graph:

    # symbolic, Keras-style: call layers on an Input
    x = nn.Input((32, 32, 3), name="image")
    y = nn.ReLU(name="relu")(nn.Conv2D(16, 3, padding=1, name="conv")(x))
    y = nn.Add(name="add")([y, x])
    model = nn.Graph(inputs=x, outputs=y)

    # a list of nodes (what converters write): name, layer, the names of its inputs
    model = nn.Graph(inputs=[nn.Input((32, 32, 3), name="image")],
                     nodes=[nn.Node("conv", nn.Conv2D(16, 3, padding=1), ["image"]),
                            nn.Node("relu", nn.ReLU(), ["conv"]),
                            nn.Node("add", nn.Add(), ["relu", "image"])],
                     outputs="add")

Params are named by node: ``{'params': {'conv': {'kernel': (3, 3, 3, 16), 'bias': (16,)}}}``
(a nested Sequential or Graph keeps its own names inside its node's entry). A node
with one input calls ``layer(x)``; with several, ``layer((x1, x2, ...))`` in the
order listed. An input reference is a node or input name, or ``"name:i"`` /
``"name:key"`` for one output of a node that returns a tuple / dict. Outputs are
one reference (the graph returns an array), a list (a tuple) or a dict (a dict).
"""
import dataclasses
import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as linen
import jax.numpy as jnp
from flax.core import FrozenDict

from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._activations import activation_layer
from funcdl.nn._base import Layer, takes_train
from funcdl.nn._config import from_config, to_config
from funcdl.nn._symbolic import Call, Input, Symbol, short

# '/' joins pytree paths and ':' selects an output, so neither may appear in a name.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
MAX_NAME = 200
MAX_NODES = 100_000     # per graph; the largest published networks have a few thousand
MAX_FAN_IN = 10_000     # inputs of one node, of the graph, and outputs of the graph


def check_name(name: Any, what: str) -> str:
    """``name`` if it can name a graph input, node or output key, else ConfigError."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise ConfigError(f"{what} name {short(name)} is invalid: use letters, digits, '_', '.' and '-' "
                          f"(not starting with '.' or '-'), at most {MAX_NAME} characters")
    if name == "params" or name.startswith("__"):  # flax reads these as a variables collection / method
        raise ConfigError(f"{what} name {name!r} is reserved: pick another (not 'params', not starting with '__')")
    return name


def parse_ref(ref: str) -> tuple[str, int | str | None]:
    """``('conv1', None)`` from ``'conv1'``; ``('encoder', 0)`` from ``'encoder:0'``; ``('heads', 'aux')`` from
    ``'heads:aux'``."""
    if not isinstance(ref, str):
        raise ConfigError(f"a node input must be a name, got {short(ref)}")
    name, colon, selector = ref.partition(":")
    check_name(name, "referenced")
    if not colon:
        return name, None
    check_name(selector, f"output selector of {name!r}:")
    return name, int(selector) if selector.isdigit() else selector


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a Graph: its name (the params key), its layer, and the references of its inputs.

    Args:
      name: unique in the graph; letters, digits, '_', '.', '-'.
      layer: a funcdl layer (a bare activation function such as ``nn.relu`` becomes its layer).
      inputs: input or node names (``"name:i"`` for output i of a multi-output node), in call order.
    """
    name: str
    layer: Any
    inputs: tuple[str, ...]

    def __post_init__(self):
        check_name(self.name, "node")
        layer = self.layer
        if isinstance(layer, (Input, Symbol)) or not (isinstance(layer, linen.Module) or callable(layer)):
            raise ConfigError(f"node {self.name!r}: its layer must be a funcdl layer, got {type(layer).__name__}")
        if not isinstance(layer, linen.Module):
            layer = activation_layer(layer)
        elif layer.name is not None or layer.parent is not None:
            layer = layer.clone(parent=None, name=None)  # the node's name is the layer's name
        inputs = (self.inputs,) if isinstance(self.inputs, str) else self.inputs
        if not isinstance(inputs, (tuple, list)) or not 1 <= len(inputs) <= MAX_FAN_IN:
            raise ConfigError(f"node {self.name!r} needs a list of 1 to {MAX_FAN_IN} input names, "
                              f"got {short(self.inputs)}")
        for ref in inputs:
            parse_ref(ref)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "inputs", tuple(inputs))

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., "layer": {...layer config...}, "inputs": [...]}``."""
        return {"name": self.name, "layer": to_config(self.layer), "inputs": list(self.inputs)}

    @classmethod
    def from_config(cls, config: Any) -> "Node":
        """The Node of ``to_config`` output, checked (it may come from a file)."""
        if not isinstance(config, dict) or set(config) != {"name", "layer", "inputs"}:
            raise ConfigError(f"a graph node must be {{'name', 'layer', 'inputs'}}, got {short(config)}")
        name = check_name(config["name"], "node")
        if not isinstance(config["inputs"], list):
            raise ConfigError(f"node {name!r}: inputs must be a list of names, got {short(config['inputs'])}")
        try:
            layer = from_config(config["layer"])
        except ConfigError as err:
            raise ConfigError(f"node {name!r}: {err}") from None
        return cls(name, layer, tuple(config["inputs"]))


class Graph(Layer):
    """A directed acyclic graph of named layers, applied as one pure function (see the module docstring).

    ``init(key, x)`` / ``apply(variables, x, train=...)`` take ``x`` an array for a graph with one input,
    a tuple (in ``inputs`` order) or a dict ``{name: array}`` for several. ``nodes`` are kept in an order
    where every node comes after its inputs (the given order when it is one).

    Attributes:
      inputs: tuple of :class:`Input` (each named).
      nodes: tuple of :class:`Node`.
      outputs: a reference (str), a tuple of references, or a mapping ``{key: reference}``.
    """
    inputs: Any = ()
    nodes: Sequence[Node] = ()
    outputs: Any = ()

    def __post_init__(self):
        if not self.nodes and _holds_symbols(self.outputs):
            inputs, nodes, outputs = trace(self.inputs, self.outputs)
        else:
            inputs, nodes, outputs = self.inputs, self.nodes, self.outputs
        inputs, nodes, outputs = checked(inputs, nodes, outputs)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "outputs", outputs)
        super().__post_init__()

    @classmethod
    def from_config_fields(cls, fields: dict[str, Any]) -> "Graph":
        """The Graph of ``to_config`` fields (``inputs``, ``nodes``, ``outputs``), every part checked."""
        inputs, nodes = fields.get("inputs", []), fields.get("nodes", [])
        if not isinstance(inputs, list) or not isinstance(nodes, list):
            raise ConfigError("a graph's inputs and nodes must be lists")
        if len(nodes) > MAX_NODES or len(inputs) > MAX_FAN_IN:
            raise ConfigError(f"a graph may hold at most {MAX_NODES} nodes and {MAX_FAN_IN} inputs; this one has "
                              f"{len(nodes)} and {len(inputs)}")
        return cls(inputs=tuple(Input.from_config(spec) for spec in inputs),
                   nodes=tuple(Node.from_config(node) for node in nodes),
                   outputs=_outputs_from_json(fields.get("outputs")))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs' names, in the order a tuple input is read."""
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_refs(self) -> tuple[str, ...]:
        """Every output reference, in order (a dict's in its key order)."""
        return _refs(self.outputs)

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise ConfigError(f"the graph has no node {name!r}")

    def symbolic_outputs(self, make: Callable[[Any], Symbol]) -> Any:
        """This graph's outputs as Symbols of a call of it (an array, a tuple or a dict of them)."""
        if isinstance(self.outputs, str):
            return make(None)
        if isinstance(self.outputs, tuple):
            return tuple(make(index) for index in range(len(self.outputs)))
        return {key: make(key) for key in self.outputs}

    @linen.compact
    def __call__(self, x, train=False):
        values = dict(zip(self.input_names, self._bind(x)))
        for node in self.nodes:
            args = [select(values, ref) for ref in node.inputs]
            layer = node.layer.clone(parent=self, name=node.name)
            arg = args[0] if len(args) == 1 else tuple(args)
            values[node.name] = layer(arg, train=train) if takes_train(layer) else layer(arg)
        if isinstance(self.outputs, str):
            return select(values, self.outputs)
        if isinstance(self.outputs, tuple):
            return tuple(select(values, ref) for ref in self.outputs)
        return {key: select(values, ref) for key, ref in self.outputs.items()}

    def _bind(self, x):
        """The arrays of ``x`` in ``inputs`` order, each checked against its declared shape."""
        names = self.input_names
        if isinstance(x, Mapping):
            if set(x) != set(names):
                raise ShapeError(f"the graph takes inputs {list(names)}; got a dict of {sorted(map(str, x))}")
            xs = [x[name] for name in names]
        elif isinstance(x, (tuple, list)):
            xs = list(x)
        else:
            xs = [x]
        if len(xs) != len(names):
            raise ShapeError(f"the graph takes {len(names)} inputs ({', '.join(names)}): pass a tuple in that "
                             f"order or a dict {{name: array}}; got {len(xs)}")
        xs = [value if hasattr(value, "shape") else jnp.asarray(value) for value in xs]
        for spec, value in zip(self.inputs, xs):
            _check_input(spec, value)
        return xs


def select(values: Mapping[str, Any], ref: str) -> Any:
    """The value a reference names: a node's (or input's) output, or one output of a multi-output node."""
    name, selector = parse_ref(ref)
    value = values[name]
    if selector is None:
        return value
    try:
        if isinstance(value, Mapping):
            return value[str(selector)]
        if isinstance(value, (tuple, list)):
            return value[int(selector)]
    except (KeyError, IndexError, ValueError):
        pass
    kind = f"a dict of {sorted(value)}" if isinstance(value, Mapping) else (
        f"{len(value)} outputs" if isinstance(value, (tuple, list)) else "one array")
    raise ShapeError(f"reference {ref!r} selects output {selector!r} of {name!r}, which gives {kind}")


def _check_input(spec: Input, x: Any) -> None:
    shape = tuple(x.shape[1:])
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, shape)):
        raise ShapeError(f"graph input {spec.name!r} takes examples of shape {spec.shape}, got {shape} "
                         f"(batch shape {tuple(x.shape)})")


def _holds_symbols(outputs: Any) -> bool:
    values = outputs.values() if isinstance(outputs, Mapping) else (
        outputs if isinstance(outputs, (tuple, list)) else (outputs,))
    return any(isinstance(value, (Input, Symbol)) for value in values)


def _refs(outputs: Any) -> tuple[str, ...]:
    if isinstance(outputs, str):
        return (outputs,)
    return tuple(outputs.values()) if isinstance(outputs, Mapping) else tuple(outputs)


def _outputs_from_json(outputs: Any) -> Any:
    if isinstance(outputs, (str, dict)):
        return outputs
    if isinstance(outputs, list):
        return tuple(outputs)
    raise ConfigError(f"a graph's outputs must be a name, a list of names or a dict of names, got "
                      f"{short(outputs)}")


# -- checking a graph: names, references, order, cycles, unused nodes -------------------------------------------
def checked(inputs: Any, nodes: Any, outputs: Any) -> tuple[tuple[Input, ...], tuple[Node, ...], Any]:
    """(inputs, nodes, outputs) of a valid graph, normalised; ConfigError naming the first problem.

    Inputs get their default names; nodes come back in an order where each follows its inputs; outputs
    become a str, a tuple or a FrozenDict.
    """
    inputs = _checked_inputs(inputs)
    if not isinstance(nodes, (tuple, list)) or len(nodes) > MAX_NODES:
        raise ConfigError(f"a graph's nodes must be a list of at most {MAX_NODES} Nodes")
    if not all(isinstance(node, Node) for node in nodes):
        bad = next(node for node in nodes if not isinstance(node, Node))
        raise ConfigError(f"a graph's nodes must be funcdl.nn.Node objects, got {type(bad).__name__}")
    names = [spec.name for spec in inputs] + [node.name for node in nodes]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"duplicate name {name!r}: every input and node of a graph needs its own name")
        seen.add(name)
    for node in nodes:
        for ref in node.inputs:
            if parse_ref(ref)[0] not in seen:
                raise ConfigError(f"node {node.name!r} takes input {ref!r}, which is no input or node of the graph")
    outputs = _checked_outputs(outputs, seen)
    nodes = _topological(tuple(nodes))
    _check_all_used(nodes, outputs)
    return inputs, nodes, outputs


def _checked_inputs(inputs: Any) -> tuple[Input, ...]:
    specs = [inputs] if isinstance(inputs, Input) else inputs
    if not isinstance(specs, (tuple, list)) or not 1 <= len(specs) <= MAX_FAN_IN:
        raise ConfigError(f"a graph needs 1 to {MAX_FAN_IN} inputs (funcdl.nn.Input), got {short(inputs)}")
    if not all(isinstance(spec, Input) for spec in specs):
        raise ConfigError(f"a graph's inputs must be funcdl.nn.Input objects, got {short(inputs)}")
    taken = {spec.name for spec in specs if spec.name is not None}
    named = []
    for spec in specs:
        if spec.name is None:
            spec = dataclasses.replace(spec, name=_fresh("input", taken))
        named.append(spec)
        check_name(spec.name, "input")
    return tuple(named)


def _checked_outputs(outputs: Any, names: set[str]) -> Any:
    if isinstance(outputs, Mapping):
        for key in outputs:
            check_name(key, "output")
        outputs = FrozenDict({key: outputs[key] for key in outputs})
    elif isinstance(outputs, list):
        outputs = tuple(outputs)
    if not isinstance(outputs, (str, tuple, FrozenDict)) or not 1 <= len(_refs(outputs)) <= MAX_FAN_IN:
        raise ConfigError(f"a graph needs 1 to {MAX_FAN_IN} outputs: a node name, a list or a dict of them; "
                          f"got {short(outputs)}")
    for ref in _refs(outputs):
        if parse_ref(ref)[0] not in names:
            raise ConfigError(f"output {ref!r} is no input or node of the graph")
    return outputs


def _topological(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """``nodes`` ordered so that every node follows its inputs (stable: the given order when it is one)."""
    index = {node.name: position for position, node in enumerate(nodes)}
    needs = [{index[name] for name in (parse_ref(ref)[0] for ref in node.inputs) if name in index}
             for node in nodes]
    users: list[list[int]] = [[] for _ in nodes]
    for position, sources in enumerate(needs):
        for source in sources:
            users[source].append(position)
    waiting = [len(sources) for sources in needs]
    ready = [position for position, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        position = heapq.heappop(ready)
        order.append(position)
        for user in users[position]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        raise ConfigError(f"the graph has a cycle: {_cycle(nodes, needs, waiting)}; a graph must be acyclic")
    return tuple(nodes[position] for position in order)


def _cycle(nodes: tuple[Node, ...], needs: list[set[int]], waiting: list[int]) -> str:
    """'a -> b -> a': one cycle among the nodes left waiting by the topological sort."""
    position = next(p for p, count in enumerate(waiting) if count)
    path: list[int] = []
    seen: dict[int, int] = {}
    while position not in seen:
        seen[position] = len(path)
        path.append(position)
        position = min(source for source in needs[position] if waiting[source])
    loop = [nodes[p].name for p in reversed(path[seen[position]:])]
    shown = loop if len(loop) <= 8 else loop[:4] + ["..."] + loop[-3:]
    return " -> ".join(shown + [loop[0]])


def _check_all_used(nodes: tuple[Node, ...], outputs: Any) -> None:
    used = {parse_ref(ref)[0] for node in nodes for ref in node.inputs} | {parse_ref(ref)[0] for ref in
                                                                           _refs(outputs)}
    for node in nodes:
        if node.name not in used:
            raise ConfigError(f"node {node.name!r} ({type(node.layer).__name__}) is never used: no node takes it and "
                              "it is not an output; remove it or add it to the outputs")


# -- the symbolic API: recorded calls -> nodes ------------------------------------------------------------------
def _fresh(base: str, taken: set[str]) -> str:
    """``base``, else ``base_1``, ``base_2``, ... : the first not in ``taken`` (which it joins)."""
    name, count = base, 0
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    taken.add(name)
    return name


def trace(inputs: Any, outputs: Any) -> tuple[tuple[Input, ...], tuple[Node, ...], Any]:
    """(inputs, nodes, outputs) of the graph from ``inputs`` (Inputs) to ``outputs`` (Symbols).

    Nodes are the layer calls ``outputs`` depend on, in the order they were made; a layer's ``name=``
    names its node, others get ``conv2d``, ``conv2d_1``, ... from their class name.
    """
    specs = (inputs,) if isinstance(inputs, Input) else tuple(inputs) if isinstance(inputs, (tuple, list)) else ()
    if not specs or not all(isinstance(spec, Input) for spec in specs):
        raise ConfigError(f"Graph(inputs=..., outputs=...) takes the Input objects the outputs were built from; "
                          f"got inputs={short(inputs)}")
    specs = _checked_inputs(specs)
    ids = {id(original): spec for original, spec in zip((inputs,) if isinstance(inputs, Input) else inputs, specs)}
    calls = _calls(_symbols(outputs))
    taken = {str(spec.name) for spec in specs}
    names: dict[int, str] = {}
    for call in calls:  # explicit names first, so that generated ones avoid them
        if call.layer.name is not None:
            if check_name(call.layer.name, "layer") in taken:
                raise ConfigError(f"duplicate name {call.layer.name!r}: every input and layer of a graph needs its "
                                  "own name")
            names[id(call)] = call.layer.name
            taken.add(call.layer.name)
    for call in calls:
        if id(call) not in names:
            names[id(call)] = _fresh(type(call.layer).__name__.lower(), taken)

    def ref(value: Any) -> str:
        if isinstance(value, Input):
            if id(value) not in ids:
                raise ConfigError(f"the outputs depend on an Input ({value.name or 'unnamed'}, shape {value.shape}) "
                                  "that is not among the graph's inputs; pass it in inputs=")
            return str(ids[id(value)].name)
        base = names[id(value.call)]
        return base if value.index is None else f"{base}:{value.index}"
    nodes = tuple(Node(names[id(call)], call.layer, tuple(ref(arg) for arg in call.args)) for call in calls)
    if isinstance(outputs, Mapping):
        return specs, nodes, {key: ref(value) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return specs, nodes, tuple(ref(value) for value in outputs)
    return specs, nodes, ref(outputs)


def _symbols(outputs: Any) -> list[Any]:
    values = list(outputs.values()) if isinstance(outputs, Mapping) else (
        list(outputs) if isinstance(outputs, (tuple, list)) else [outputs])
    for value in values:
        if not isinstance(value, (Input, Symbol)):
            raise ConfigError(f"Graph outputs must be what layers returned (symbolic tensors), got {short(value)}")
    return values


def _calls(outputs: list[Any]) -> list[Call]:
    """Every recorded call ``outputs`` depend on, in call order; a layer object called twice is refused."""
    found: dict[int, Call] = {}
    stack = [value.call for value in outputs if isinstance(value, Symbol)]
    while stack:
        call = stack.pop()
        if id(call) in found:
            continue
        found[id(call)] = call
        stack.extend(arg.call for arg in call.args if isinstance(arg, Symbol))
    calls = sorted(found.values(), key=lambda call: call.order)
    layers: dict[int, Call] = {}
    for call in calls:
        if id(call.layer) in layers:
            raise ConfigError(f"the same {type(call.layer).__name__} layer object is called twice; graph nodes do not "
                              "share weights: make one layer per call")
        layers[id(call.layer)] = call
    return calls


def as_graph(model: Any) -> Graph:
    """``model`` as a Graph with the same params tree: a Graph itself, or a Sequential as a chain.

    A Sequential of n layers becomes input ``'input'`` and nodes ``layers_0`` ... ``layers_{n-1}``, each
    taking the one before, so converters can walk every model as a graph.
    """
    if isinstance(model, Graph):
        return model
    layers = getattr(model, "layers", None)
    if not isinstance(layers, tuple) or not layers:
        raise ConfigError(f"{type(model).__name__} is not a Graph or a non-empty Sequential")
    names = [f"layers_{index}" for index in range(len(layers))]
    nodes = [Node(name, layer, (previous,)) for name, layer, previous in zip(names, layers, ["input"] + names)]
    return Graph(inputs=(Input(name="input"),), nodes=tuple(nodes), outputs=names[-1])
