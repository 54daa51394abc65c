"""The parity harness: one model, the same weights and batches, run by every framework.

For each runner — funcdl jit, funcdl eager, PyTorch eager, ``torch.compile``,
TF eager, ``tf.function(jit_compile=True)`` — it reports forward outputs
(inference mode), gradients, the loss after each of N optimizer steps (train
mode, with the optimizer flavor that matches the framework) and the time per
step, each against funcdl jit; plus a per-layer report (each layer converted
alone and fed funcdl's own input to it: OK or INACCURATE, with the max abs and
relative difference). Everything runs with full fp32 matmul precision (XLA's
and TF32 defaults would hide real differences). Dropout is set to rate 0 for
the gradient and training comparisons: its random masks are framework-specific.

The loss is picked from what the model outputs (``funcdl.train.objective``):
logits get cross-entropy, a softmax's probabilities Keras' sparse categorical
cross-entropy on probabilities, one sigmoid unit binary cross-entropy, anything
else mean squared error; ``compare(loss=...)`` (CLI ``--loss``) names one
instead. Every framework computes the same function (probabilities clipped to
``[1e-7, 1 - 1e-7]`` as Keras does), and the report says which loss it was.
"""
import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import losses as losses_lib
from funcdl import nn, optim
from funcdl.errors import ConfigError, FuncdlError, choices_message
from funcdl.io import flatten_variables
from funcdl.train import TrainState, make_train_step
from funcdl.train import objective as objective_lib
from interop import frameworks, keras, pytorch
from interop.layouts import KERAS_WEIGHTS, weights_from_keras

RUNNERS = ("funcdl", "funcdl-eager", "torch-eager", "torch-compile", "tf-eager", "tf-xla")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
FORWARD_ATOL, GRAD_RTOL, LOSS_RTOL = 1e-5, 1e-5, 1e-4
# the losses every framework computes here, by funcdl name (aliases such as 'mean_squared_error' work too)
LOSSES = ("mse", "cross_entropy", "sparse_categorical_crossentropy", "binary_crossentropy",
          "binary_crossentropy_with_logits")
_EPSILON = 1e-7  # keras.backend.epsilon(): where probability losses clip


def without_dropout(model: Any) -> Any:
    """The same architecture with every Dropout at rate 0 (params unchanged)."""
    config = nn.to_config(model)

    def strip(node):
        if isinstance(node, dict):
            return {k: (0.0 if node.get("type") == "Dropout" and k == "rate" else strip(v)) for k, v in node.items()}
        return [strip(v) for v in node] if isinstance(node, list) else node
    return nn.from_config(strip(config))


def keras_equivalent(model: Any, variables: Any) -> tuple[Any, dict[str, Any]]:
    """The model as Keras parametrises it: LSTM / SimpleRNN (and GRU without reset_after) with one bias.

    Both biases are summed into ``bias`` (the same function), so a gradient step
    moves one bias as Keras does instead of two as torch and funcdl do.
    """
    config = nn.to_config(model)
    params = {name: dict(tree) for name, tree in variables.get("params", {}).items()}
    for index, layer in enumerate(config.get("layers", [])):
        single = layer["type"] in ("LSTM", "SimpleRNN") or (layer["type"] == "GRU" and not layer["reset_after"])
        if single and layer.get("use_recurrent_bias", True):
            layer["use_recurrent_bias"] = False
            tree = params[f"layers_{index}"]
            tree["bias"] = tree["bias"] + tree.pop("recurrent_bias")
    return nn.from_config(config), {**variables, "params": params}


def max_differences(actual: Any, expected: Any) -> tuple[float, float]:
    """(max abs difference, max abs difference / max abs expected)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    abs_diff = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    return abs_diff, abs_diff / max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)


def tree_rel_difference(actual: Any, expected: Any) -> float:
    """Worst per-tensor relative difference between two flat {name: array} dicts.

    Each tensor's difference is divided by its own largest value, or by 10% of the
    largest value in any tensor if that is larger: a gradient that is zero in exact
    arithmetic (a bias right before BatchNorm) holds only rounding noise.
    """
    if set(actual) != set(expected):
        raise ConfigError(f"gradient names differ: {sorted(set(actual) ^ set(expected))[:3]}")
    scale = max((float(np.max(np.abs(v))) for v in expected.values() if np.size(v)), default=0.0)
    worst = 0.0
    for name, reference in expected.items():
        difference = max_differences(actual[name], reference)[0]
        worst = max(worst, difference / max(float(np.max(np.abs(reference))) if np.size(reference) else 0.0,
                                            0.1 * scale, 1e-30))
    return worst


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """fp32 matmuls everywhere: XLA 'highest', no TF32 in torch or TF."""
    with jax.default_matmul_precision("highest"):
        yield


def _to_framework_layout(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def _from_framework_layout(y):
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


@dataclasses.dataclass(frozen=True)
class ParityLoss:
    """The loss compared, as funcdl computes it; the torch and Keras runners compute the same function.

    Attributes:
      name: one of LOSSES.
      from_logits: whether the model's outputs are logits (or log-probabilities) for this loss.
      labels: 'integer' (class indices), 'binary' (0/1 targets) or 'dense' (real targets).
      loss_fn: funcdl's ``(outputs, targets) -> (B,)``.
      description: one line for the report, e.g. how the loss was matched to the model's last layer.
    """
    name: str
    from_logits: bool
    labels: str
    loss_fn: Callable
    description: str


def _output_layer(model: Any) -> Any:
    """The layer that makes the output of a Sequential (itself) or of a one-output Graph (its output node's)."""
    if isinstance(model, nn.Graph) and isinstance(model.outputs, str):
        name = model.outputs.partition(":")[0]
        if name not in model.input_names:
            return model.node(name).layer
    return model


def _canonical_loss(loss: str) -> str:
    """The LOSSES name of ``loss`` (a funcdl name or an alias); ConfigError for any other."""
    try:
        fn = losses_lib.get(loss)
    except ConfigError:
        fn = None
    for name in LOSSES:
        if fn is losses_lib.get(name):
            return name
    raise ConfigError(choices_message("parity loss", loss, LOSSES))


def choose_loss(model: Any, output_shape: Sequence[int], loss: str | None = None) -> ParityLoss:
    """The loss to compare ``model`` on: ``loss`` if given, else the one its output calls for (module docstring).

    Args:
      model: the funcdl model; its last layer says whether it outputs logits or probabilities.
      output_shape: its output's shape with the batch axis.
      loss: a name from LOSSES (or an alias), or None to pick one.
    Raises:
      ConfigError: an unknown loss, or one that cannot take what the model outputs (says what to use).
    """
    layer = _output_layer(model)
    kind, _ = objective_lib.output_kind(layer)
    classes = len(output_shape) == 2 and output_shape[-1] > 1
    if loss is None:
        if classes:
            name = "cross_entropy" if kind != objective_lib.PROBABILITIES else "sparse_categorical_crossentropy"
        elif output_shape[-1] == 1 and kind == objective_lib.PROBABILITIES:
            name = "binary_crossentropy"
        else:
            name = "mse"
        how = "picked from the model's output"
    else:
        name, how = _canonical_loss(loss), "as asked"
    if name in ("cross_entropy", "sparse_categorical_crossentropy") and not classes:
        raise ConfigError(f"loss {name} needs class scores of shape (batch, classes); the model outputs "
                          f"{tuple(output_shape)}: use --loss mse")
    resolved = objective_lib.resolve(name, layer)
    from_logits = bool(getattr(resolved.loss_fn, "keywords", {}).get("from_logits", name in (
        "cross_entropy", "binary_crossentropy_with_logits")))
    labels = "integer" if resolved.label_kind == "integer" else "binary" if "binary" in name else "dense"
    return ParityLoss(name, from_logits, labels, resolved.loss_fn, f"{resolved.description} ({how})")


def make_batches(model: Any, variables: Any, input_shape: Sequence[int], steps: int, batch_size: int,
                 seed: int, loss: str | None = None) -> tuple[np.ndarray, np.ndarray, ParityLoss]:
    """``steps + 1`` batches (x NHWC float32 or int, y labels or targets) and the loss compared on them."""
    rng = np.random.default_rng(seed)
    layers = getattr(model, "layers", ())
    if layers and isinstance(layers[0], nn.Embedding):
        x = rng.integers(0, layers[0].num_embeddings, (steps + 1, batch_size) + tuple(input_shape)).astype(np.int32)
    else:
        x = rng.normal(size=(steps + 1, batch_size) + tuple(input_shape)).astype(np.float32)
    out = jax.eval_shape(lambda v, s: model.apply(v, s), variables, jnp.asarray(x[0]))
    if not hasattr(out, "shape"):
        raise ConfigError("compare takes models with one output array; this one returns several")
    chosen = choose_loss(model, out.shape, loss)
    if chosen.labels == "integer":
        return x, rng.integers(0, out.shape[-1], (steps + 1, batch_size)).astype(np.int32), chosen
    if chosen.labels == "binary":
        return x, rng.integers(0, 2, (steps + 1,) + out.shape).astype(np.float32), chosen
    return x, rng.normal(size=(steps + 1,) + out.shape).astype(np.float32), chosen


class FuncdlRunner:
    """funcdl on the same batches: compiled by XLA, or op by op under ``jax.disable_jit()``."""

    def __init__(self, model, variables, input_shape, loss, eager=False):
        self.model, self.variables, self.eager = without_dropout(model), variables, eager
        self.loss_fn = loss.loss_fn if loss is not None else losses_lib.mse

    def _maybe_jit(self, fn):
        return fn if self.eager else jax.jit(fn)

    def _context(self):
        return jax.disable_jit() if self.eager else contextlib.nullcontext()

    def forward(self, x):
        with self._context():
            return np.asarray(self._maybe_jit(lambda v, x: self.model.apply(v, x))(self.variables, jnp.asarray(x)))

    def gradients(self, x, y):
        def objective(params):
            outputs, _ = self.model.apply({**self.variables, "params": params}, x, train=True,
                                          mutable=["batch_stats"])
            return self.loss_fn(outputs, y).mean()
        with self._context():
            loss, grads = self._maybe_jit(jax.value_and_grad(objective))(self.variables["params"])
        return float(loss), flatten_variables({"params": grads})

    def train(self, xs, ys, optimizer, learning_rate, flavor):
        transform = optim.get(optimizer, learning_rate, flavor=flavor)
        step = self._maybe_jit(make_train_step(self.model, self.loss_fn, transform))
        state = TrainState(self.variables, transform.init(self.variables["params"]), jnp.asarray(0))
        mask, key = jnp.ones(xs.shape[1]), jax.random.key(0)
        losses, seconds = [], []
        with self._context():
            for x, y in zip(xs, ys):
                start = time.perf_counter()
                state, metrics = step(state, jnp.asarray(x), jnp.asarray(y), mask, key)
                losses.append(float(jax.block_until_ready(metrics.loss)))
                seconds.append(time.perf_counter() - start)
        return losses, seconds


class TorchRunner:
    """The model converted by ``interop.pytorch.to_torch``: eager, or through ``torch.compile``."""

    def __init__(self, model, variables, input_shape, loss, compiled=False):
        self.torch = frameworks.torch()
        self.torch.backends.cuda.matmul.allow_tf32 = False
        self.torch.backends.cudnn.allow_tf32 = False
        self.model, self.input_shape, self.loss = without_dropout(model), tuple(input_shape), loss
        self.build = lambda: pytorch.to_torch(self.model, variables, input_shape)
        self.compiled = compiled

    def _call(self, module, x):
        fn = self.torch.compile(module) if self.compiled else module
        return fn(self.torch.from_numpy(np.array(_to_framework_layout(np.asarray(x)))))

    def _loss(self, outputs, y):
        functional, loss = self.torch.nn.functional, self.loss
        if loss.labels == "integer":
            if not loss.from_logits:  # Keras' form, as funcdl computes it: log of the clipped probabilities
                outputs = self.torch.log(self.torch.clamp(outputs, _EPSILON, 1.0 - _EPSILON))
            return functional.cross_entropy(outputs, self.torch.from_numpy(np.array(y)).long())
        target = self.torch.from_numpy(np.array(_to_framework_layout(y)))
        if loss.labels == "binary":
            if loss.from_logits:
                return functional.binary_cross_entropy_with_logits(outputs, target)
            return functional.binary_cross_entropy(self.torch.clamp(outputs, _EPSILON, 1.0 - _EPSILON), target)
        return functional.mse_loss(outputs, target)

    def forward(self, x):
        with self.torch.no_grad():
            return _from_framework_layout(self._call(self.build().eval(), x).numpy())

    def gradients(self, x, y):
        module = self.build().train()
        loss = self._loss(self._call(module, x), y)
        loss.backward()
        state = dict(module.state_dict())
        state.update({name: p.grad for name, p in module.named_parameters()})
        grads = pytorch.from_state_dict(state, self.model, self.input_shape, source="gradients")
        return loss.item(), flatten_variables({"params": grads["params"]})

    def train(self, xs, ys, optimizer, learning_rate, flavor):
        module = self.build().train()
        fn = self.torch.compile(module) if self.compiled else module
        classes = {"sgd": self.torch.optim.SGD, "adam": self.torch.optim.Adam, "rmsprop": self.torch.optim.RMSprop}
        transform = classes[optimizer](module.parameters(), lr=learning_rate)
        losses, seconds = [], []
        for x, y in zip(xs, ys):
            start = time.perf_counter()
            transform.zero_grad()
            loss = self._loss(fn(self.torch.from_numpy(np.array(_to_framework_layout(x)))), y)
            loss.backward()
            transform.step()
            losses.append(loss.item())
            seconds.append(time.perf_counter() - start)
        return losses, seconds


class KerasRunner:
    """The model converted by ``interop.keras.to_keras``: TF eager, or ``tf.function(jit_compile=True)``."""

    def __init__(self, model, variables, input_shape, loss, xla=False):
        self.tf, self.keras = frameworks.tensorflow(), frameworks.keras()
        self.tf.config.experimental.enable_tensor_float_32_execution(False)
        self.model, self.loss, self.xla = without_dropout(model), loss, xla
        self.variables = variables
        self.build = lambda: keras.to_keras(self.model, variables, input_shape, strict=True)  # training is compared

    def _loss(self, outputs, y):
        losses, loss = self.keras.losses, self.loss
        if loss.labels == "integer":
            return self.tf.reduce_mean(losses.sparse_categorical_crossentropy(y, outputs,
                                                                              from_logits=loss.from_logits))
        if loss.labels == "binary":
            return self.tf.reduce_mean(losses.binary_crossentropy(y, outputs, from_logits=loss.from_logits))
        return self.tf.reduce_mean(self.tf.square(outputs - y))

    def forward(self, x):
        return np.asarray(self.build()(x, training=False))

    def gradients(self, x, y):
        module = self.build()
        with self.tf.GradientTape() as tape:
            loss = self._loss(module(x, training=True), y)
        grads = {w.path: g for w, g in zip(module.trainable_weights, tape.gradient(loss, module.trainable_weights))}
        if isinstance(self.model, nn.Graph):
            return float(loss), self._graph_gradients(module, grads)
        module.set_weights([np.asarray(grads.get(w.path, w)) for w in module.weights])
        _, as_funcdl = keras.from_keras(module)
        grads = flatten_variables({"params": as_funcdl["params"]})
        kept = flatten_variables({"params": self.variables["params"]})  # one-bias layers have no recurrent_bias
        return float(loss), {name: value for name, value in grads.items() if name in kept}

    def _graph_gradients(self, module, grads):
        """funcdl's flat ``params/...`` gradients of a Graph from Keras' (layers named after nodes)."""
        flat = {}
        for node in self.model.nodes:
            if type(node.layer).__name__ not in KERAS_WEIGHTS:
                continue
            weights = {w.name: np.asarray(grads.get(w.path, w)) for w in module.get_layer(node.name).weights}
            for key, value in weights_from_keras(node.layer, weights).items():
                collection, name = key.split("/")
                flat[f"{collection}/{node.name}/{name}"] = value
        kept = flatten_variables({"params": self.variables["params"]})
        return {name: value for name, value in flat.items() if name in kept}

    def train(self, xs, ys, optimizer, learning_rate, flavor):
        module = self.build()
        classes = {"sgd": self.keras.optimizers.SGD, "adam": self.keras.optimizers.Adam,
                   "rmsprop": self.keras.optimizers.RMSprop}
        transform = classes[optimizer](learning_rate=learning_rate)

        def step(x, y):
            with self.tf.GradientTape() as tape:
                loss = self._loss(module(x, training=True), y)
            transform.apply_gradients(zip(tape.gradient(loss, module.trainable_variables),
                                          module.trainable_variables))
            return loss
        step = self.tf.function(step, jit_compile=True) if self.xla else step
        losses, seconds = [], []
        for x, y in zip(xs, ys):
            start = time.perf_counter()
            losses.append(float(step(self.tf.constant(x), self.tf.constant(y))))
            seconds.append(time.perf_counter() - start)
        return losses, seconds


def make_runner(name: str, model: Any, variables: Any, input_shape: Sequence[int], loss: ParityLoss | None) -> Any:
    """The runner called ``name`` (one of RUNNERS); ``loss`` None for forward only."""
    if name not in RUNNERS:
        raise ConfigError(choices_message("framework", name, RUNNERS))
    if name.startswith("funcdl"):
        return FuncdlRunner(model, variables, input_shape, loss, eager=name == "funcdl-eager")
    if name.startswith("torch"):
        return TorchRunner(model, variables, input_shape, loss, compiled=name == "torch-compile")
    return KerasRunner(model, variables, input_shape, loss, xla=name == "tf-xla")


def _runner_row(name, runner, reference, batches, trajectory, optimizer, learning_rate):
    xs, ys = batches
    flavor = "keras" if name.startswith("tf") else "torch"
    forward_abs, forward_rel = max_differences(runner.forward(xs[0]), reference["forward"])
    loss, grads = runner.gradients(xs[0], ys[0])
    losses, seconds = runner.train(xs[1:], ys[1:], optimizer, learning_rate, flavor)
    loss_rel = max((abs(a - b) / max(abs(b), 1e-30) for a, b in zip(losses, trajectory[0])), default=0.0)
    grad_rel = tree_rel_difference(grads, reference["grads"])
    ok = forward_abs <= FORWARD_ATOL and grad_rel <= GRAD_RTOL and loss_rel <= LOSS_RTOL
    return {"runner": name, "flavor": flavor, "forward_max_abs": forward_abs, "forward_max_rel": forward_rel,
            "loss_at_init": loss, "grad_max_rel": grad_rel, "losses": losses, "loss_max_rel": loss_rel,
            "step_seconds_median": statistics.median(seconds[1:] or seconds),
            "first_step_seconds": seconds[0], "ok": ok, "note": None}


def compare(model: Any, variables: Any, input_shape: Sequence[int], runners: Sequence[str] = RUNNERS, steps: int = 10,
            optimizer: str = "sgd", learning_rate: float = 0.01, batch_size: int = 16, seed: int = 0,
            layers: bool = True, loss: str | None = None) -> dict[str, Any]:
    """Run ``model`` in every runner on the same batches and compare each with funcdl jit.

    Args:
      model, variables, input_shape: a funcdl Sequential or Graph (one input, one output), its variables, one
        example's shape (NHWC); a Graph gets no per-layer report.
      runners: names from RUNNERS; a runner whose framework is missing gets a note instead of figures.
      steps: optimizer steps compared (each runner uses the matching optimizer flavor).
      optimizer: 'sgd', 'adam' or 'rmsprop'; learning_rate, batch_size, seed: as named.
      layers: also convert and check every layer on its own (the per-layer report).
      loss: a name from LOSSES, or None to pick it from the model's output (``choose_loss``).
    Returns:
      a JSON-able report: ``{'ok', 'loss', 'loss_description', 'runners': [...], 'layers': [...], ...}``.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(choices_message("optimizer", optimizer, OPTIMIZERS))
    for name in runners:
        if name not in RUNNERS:
            raise ConfigError(choices_message("framework", name, RUNNERS))
    if steps < 1 or batch_size < 1:
        raise ConfigError("--steps and --batch-size must be positive integers")
    xs, ys, chosen = make_batches(model, variables, input_shape, steps, batch_size, seed, loss)
    forms = {"torch": (model, variables), "keras": keras_equivalent(model, variables)}
    rows, references = [], {}
    with full_precision():
        for name in runners:
            flavor = "keras" if name.startswith("tf") else "torch"
            if flavor not in references:
                references[flavor] = _reference(*forms[flavor], input_shape, chosen, (xs, ys), optimizer,
                                                learning_rate, flavor)
            rows.append(_safe_row(name, *forms[flavor], input_shape, chosen, references[flavor], (xs, ys),
                                  optimizer, learning_rate))
        layer_rows = layer_report(model, variables, input_shape, xs[0], runners) if layers else []
    ok = all(r["ok"] for r in rows if r["note"] is None) and all(r["status"] == "OK" for r in layer_rows)
    at_init = next(iter(references.values()))["loss"] if references else None
    return {"ok": ok, "input_shape": list(input_shape), "batch_size": batch_size, "steps": steps,
            "optimizer": optimizer, "learning_rate": learning_rate, "loss": chosen.name,
            "loss_description": chosen.description, "loss_at_init": at_init,
            "tolerances": {"forward_abs": FORWARD_ATOL, "grad_rel": GRAD_RTOL, "loss_rel": LOSS_RTOL},
            "runners": rows, "layers": layer_rows}


def _reference(model, variables, input_shape, chosen, batches, optimizer, learning_rate, flavor):
    """funcdl jit's forward, gradients and loss trajectory: what every runner of ``flavor`` is held to."""
    (xs, ys), base = batches, FuncdlRunner(model, variables, input_shape, chosen)
    loss, grads = base.gradients(xs[0], ys[0])
    return {"forward": base.forward(xs[0]), "grads": grads, "loss": loss,
            "trajectory": base.train(xs[1:], ys[1:], optimizer, learning_rate, flavor)}


def _safe_row(name, model, variables, input_shape, chosen, reference, batches, optimizer, lr):
    try:
        runner = make_runner(name, model, variables, input_shape, chosen)
        return _runner_row(name, runner, reference, batches, reference["trajectory"], optimizer, lr)
    except FuncdlError as err:  # a missing framework, or a layer this framework cannot take
        return {"runner": name, "ok": False, "note": str(err)}
    except Exception as err:  # e.g. torch.compile without a working C++ toolchain
        return {"runner": name, "ok": False, "note": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def _single_layer(index, layer, variables):
    name = f"layers_{index}"
    sub_variables = {collection: {"layers_0": tree[name]} for collection, tree in variables.items() if name in tree}
    return nn.Sequential([layer]), sub_variables


def layer_report(model: Any, variables: Any, input_shape: Sequence[int], x: np.ndarray,
                 runners: Sequence[str]) -> list[dict[str, Any]]:
    """Each layer converted alone and fed funcdl's own input to it: OK / INACCURATE per framework."""
    frameworks = [f for f, prefix in (("torch", "torch"), ("keras", "tf")) if any(r.startswith(prefix)
                                                                                   for r in runners)]
    _, captured = model.apply(variables, jnp.asarray(x), capture_intermediates=True, mutable=["intermediates"])
    outputs = captured["intermediates"]
    rows, current = [], np.asarray(x)
    for index, layer in enumerate(getattr(model, "layers", ())):
        expected = np.asarray(outputs[f"layers_{index}"]["__call__"][0])
        sub, sub_variables = _single_layer(index, layer, variables)
        for framework in frameworks:
            rows.append(_layer_row(index, layer, framework, sub, sub_variables, current, expected))
        current = expected
    return rows


def _layer_row(index, layer, framework, sub, sub_variables, x, expected):
    row = {"layer": f"layers_{index}", "type": type(layer).__name__, "framework": framework}
    try:
        runner_class = TorchRunner if framework == "torch" else KerasRunner
        runner = runner_class(sub, sub_variables, x.shape[1:], None)
        actual = runner.forward(x)
    except Exception as err:
        return {**row, "status": "UNSUPPORTED", "max_abs": None, "max_rel": None,
                "note": str(err).splitlines()[0][:200]}
    max_abs, max_rel = max_differences(actual, expected)
    return {**row, "status": "OK" if max_abs <= FORWARD_ATOL else "INACCURATE", "max_abs": max_abs,
            "max_rel": max_rel, "note": None}


def _figure(value, spec=".1e"):
    return "-" if value is None else format(value, spec)


def format_report(report: dict[str, Any]) -> str:
    """The report as two plain-text tables (runners, then layers)."""
    lines = [f"parity: {report['optimizer']} lr={report['learning_rate']}, {report['steps']} steps, batch "
             f"{report['batch_size']}; tolerances forward {FORWARD_ATOL:g} abs, "
             f"gradients {GRAD_RTOL:g} rel, losses {LOSS_RTOL:g} rel",
             f"loss: {report.get('loss_description') or report['loss']}",
             f"{'runner':<15}{'flavor':<8}{'fwd max abs':>12}{'grad max rel':>14}{'loss max rel':>14}"
             f"{'ms/step':>10}{'first ms':>10}  status"]
    for row in report["runners"]:
        if row["note"] is not None:
            lines.append(f"{row['runner']:<15}{'':<8}{'':>60}  SKIPPED: {row['note']}")
            continue
        lines.append(f"{row['runner']:<15}{row['flavor']:<8}{_figure(row['forward_max_abs']):>12}"
                     f"{_figure(row['grad_max_rel']):>14}{_figure(row['loss_max_rel']):>14}"
                     f"{1e3 * row['step_seconds_median']:>10.2f}{1e3 * row['first_step_seconds']:>10.0f}  "
                     f"{'OK' if row['ok'] else 'INACCURATE'}")
    if report["layers"]:
        lines.append(f"{'layer':<12}{'type':<12}{'framework':<10}{'status':<13}{'max abs':>10}{'max rel':>10}")
        for row in report["layers"]:
            lines.append(f"{row['layer']:<12}{row['type']:<12}{row['framework']:<10}{row['status']:<13}"
                         f"{_figure(row['max_abs']):>10}{_figure(row['max_rel']):>10}"
                         + (f"  {row['note']}" if row["note"] else ""))
    lines.append("PARITY OK" if report["ok"] else "PARITY FAILED")
    return "\n".join(lines)
