"""The benchmark's models and data, the shared initial weights and the shared batch order.

Every runner of one cell (model x runner) starts from the same funcdl
``variables`` (``model.init`` with ``fd.fit``'s init key for ``seed``) and
visits the training examples in the same order: ``Job.order[e]`` is exactly
the ``(batches, batch_size)`` index array that ``fd.fit(..., seed=seed)`` draws
for epoch ``e``. The framework models are converted from those variables by
``interop`` where it can, else built natively by ``_torch_models`` /
``_keras_models`` with an explicit layout mapping.

Models:
  mlp     784-128-10 MLP (``fd.models.mlp``), MNIST, batch 64.
  cnn     conv32-conv64-pool-dense128 (``fd.models.cnn``), MNIST, batch 64.
  lstm    image rows as a 28-step sequence, LSTM(128) (``fd.models.lstm``), MNIST, batch 64.
  gru     the same with GRU(128) (``fd.models.gru``), MNIST, batch 64.
  resnet  the zoo's CIFAR ResNet-8 (``fd.models.resnet(depth=8)``: 16-32-64 channels, one
          residual block a stage, a Graph) on synthetic 32x32x3 images with random labels, batch 128.
"""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.io import flatten_variables, unflatten_variables
from funcdl.train import epoch_key, epoch_plan, split_seed

SYNTHETIC_EXAMPLES = 10240  # a full "epoch" of the synthetic CIFAR-shaped set (80 batches of 128)
PROBE_EXAMPLES = 8          # examples whose logits check that every framework got the same weights


def resnet(num_classes=10):
    """ResNet-8 of the zoo (``fd.models.resnet(depth=8)``) for 32x32x3 images: 16 / 32 / 64 channels."""
    return fd.models.resnet(depth=8, num_classes=num_classes, input_shape=(32, 32, 3))


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: how to build it and what it trains on."""
    name: str
    build: Callable
    batch_size: int
    input_shape: tuple   # one example, NHWC
    dataset: str         # "mnist" or "synthetic"
    description: str


MODELS = {
    "mlp": ModelSpec("mlp", fd.models.mlp, 64, (28, 28, 1), "mnist", "MLP 784-128-10"),
    "cnn": ModelSpec("cnn", fd.models.cnn, 64, (28, 28, 1), "mnist", "CNN conv32-conv64-dense128"),
    "lstm": ModelSpec("lstm", fd.models.lstm, 64, (28, 28, 1), "mnist", "row-wise LSTM(128)"),
    "gru": ModelSpec("gru", fd.models.gru, 64, (28, 28, 1), "mnist", "row-wise GRU(128)"),
    "resnet": ModelSpec("resnet", resnet, 128, (32, 32, 3), "synthetic",
                        "ResNet-8 on synthetic 32x32x3 data (random images and labels)"),
}


@dataclass
class Job:
    """One prepared cell: the model, its initial variables, the data and the batch order.

    Attributes:
      cell: the cell's settings (see ``suite.plan``): model, runner, suite, batches, epochs, ...
      order: (warmup + epochs, batches, batch_size) int32 example indices, fd.fit's order.
      probe_logits: funcdl's inference logits on ``x_train[:PROBE_EXAMPLES]`` with the
        initial variables, to check every framework's converted model against.
      full_batches: batches in a real epoch of the dataset (``batches`` may be fewer: --quick).
    """
    cell: dict
    spec: ModelSpec
    model: Any
    variables: Any
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Any
    y_test: Any
    order: np.ndarray
    probe_logits: np.ndarray
    full_batches: int
    notes: list = field(default_factory=list)

    @property
    def batch_size(self):
        return self.order.shape[2]

    @property
    def batches(self):
        return self.order.shape[1]

    @property
    def total_epochs(self):
        return self.order.shape[0]

    @property
    def on_gpu(self):
        return self.cell["suite"] == "gpu"

    @property
    def probe(self):
        return self.x_train[:PROBE_EXAMPLES]


def load_data(spec, data_dir, num_train, seed=0):
    """(x_train, y_train, x_test, y_test) for ``spec``; test is None for synthetic data.

    Args:
      num_train: how many training examples to keep (the first ones; None = all).
    """
    if spec.dataset == "synthetic":
        count = num_train or SYNTHETIC_EXAMPLES
        rng = np.random.default_rng(seed)
        x = rng.random((count,) + spec.input_shape, dtype=np.float32)
        return x, rng.integers(0, 10, count).astype(np.int32), None, None
    data = fd.data.load("mnist", data_dir)
    return data.train.x[:num_train], data.train.y[:num_train], data.test.x, data.test.y


def batch_order(num_examples, batch_size, epochs, seed=0):
    """The (epochs, ceil(num_examples / batch_size), batch_size) indices ``fd.fit(seed=seed)`` visits."""
    _, train_key = split_seed(seed)

    def one_epoch(epoch):  # fd.fit's keys and batch order (funcdl.train.epoch)
        return epoch_plan(epoch_key(train_key, epoch), num_examples, batch_size)[0]
    # One compiled call for all epochs: op-by-op dispatch would compile every small op first.
    return np.asarray(jax.jit(jax.vmap(one_epoch))(jnp.arange(epochs)), np.int32)


def initial_variables(model, x, seed=0):
    """``model``'s variables as ``fd.fit(seed=seed)`` initialises them."""
    init_key, _ = split_seed(seed)
    return jax.jit(model.init)(init_key, jnp.asarray(x[:1]))


def make_job(cell):
    """Build the Job of ``cell`` (a dict with model, batches, epochs, warmup, data_dir, seed, ...).

    The data, initial variables, batch order and probe logits come from
    ``cell['prepared']`` (an ``.npz`` written by ``save_initial``, shared by every
    cell of the model) when given, else they are computed here.
    """
    spec = MODELS[cell["model"]]
    full = (SYNTHETIC_EXAMPLES if spec.dataset == "synthetic" else 60000) // spec.batch_size
    if cell.get("prepared"):
        return Job(cell, spec, spec.build(), **load_initial(cell["prepared"]), full_batches=full)
    batches = min(cell.get("batches") or full, full)
    num_train = batches * spec.batch_size  # whole batches only: no padded last batch in any framework
    seed = cell.get("seed", 0)
    x_train, y_train, x_test, y_test = load_data(spec, cell.get("data_dir"), num_train, seed)
    model = spec.build()
    variables = initial_variables(model, x_train, seed)
    order = batch_order(num_train, spec.batch_size, cell["warmup"] + cell["epochs"], seed)
    probe_logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x_train[:PROBE_EXAMPLES])))
    return Job(cell, spec, model, variables, x_train, y_train, x_test, y_test, order, probe_logits, full)


_STORED = ("x_train", "y_train", "x_test", "y_test", "order", "probe_logits")


def save_initial(job, path, with_test=True):
    """Write ``job``'s data, initial variables, batch order and probe logits to ``path`` (.npz).

    Args:
      with_test: store the test set too (only cells that measure accuracy need it).
    """
    names = [name for name in _STORED if with_test or not name.endswith("_test")]
    arrays = {f"variables/{key}": value for key, value in flatten_variables(job.variables).items()}
    arrays.update({name: getattr(job, name) for name in names if getattr(job, name) is not None})
    np.savez(path, **arrays)


def load_initial(path):
    """The Job fields stored by ``save_initial``: variables (numpy), data, order, probe_logits."""
    with np.load(path) as stored:
        flat = {key[len("variables/"):]: stored[key] for key in stored.files if key.startswith("variables/")}
        fields = {name: stored[name] if name in stored.files else None for name in _STORED}
    return {"variables": unflatten_variables(flat), **fields}


def accuracy(predict, x, y, chunk=1000):
    """Share of ``x`` that ``predict(x_chunk) -> logits (numpy)`` classifies as ``y``."""
    correct = 0
    for start in range(0, len(x), chunk):
        logits = np.asarray(predict(x[start:start + chunk]))
        correct += int((logits.argmax(-1) == y[start:start + chunk]).sum())
    return correct / len(x)


def max_abs_diff(logits, job):
    """Largest |framework logits - funcdl logits| on the probe examples (same weights => ~1e-6)."""
    return float(np.max(np.abs(np.asarray(logits, np.float32) - job.probe_logits)))
