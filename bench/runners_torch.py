"""PyTorch runners: ``torch-eager``, ``torch-compile`` and ``torch-cudagraph`` (GPU only).

All three train the torch twin of the funcdl model, holding funcdl's initial
weights (``interop.pytorch.to_torch``, else ``bench._torch_models``), with
``torch.optim.Adam(lr=1e-3)`` and ``F.cross_entropy`` on the batches of
``Job.order``. The training set (NCHW), labels and batch order are moved to
the device once; each step gathers its batch with ``index_select`` there.
"""
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import _torch_models
from bench._common import Measured, Unavailable, time_epochs
from bench._models import accuracy, max_abs_diff
from interop import pytorch

CAPTURE_WARMUP_STEPS = 3  # eager steps on a side stream before capturing (torch's recipe)


@dataclass
class Setup:
    """A torch model with funcdl's weights, its optimizer and the device-resident data."""
    module: Any
    optimizer: Any
    x: Any       # (N, C, H, W) float32 on device
    y: Any       # (N,) int64 on device
    order: Any   # (epochs, batches, batch_size) int64 on device
    device: Any
    notes: list
    init_diff: float


def _device(job):
    if not job.on_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Unavailable("torch sees no CUDA device")
    return torch.device("cuda")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def build_module(job, notes):
    """A torch module holding ``job.variables``: ``interop.pytorch.to_torch``, else the native twin."""
    if job.spec.name != "resnet":
        try:
            return pytorch.to_torch(job.model, job.variables, job.spec.input_shape)
        except Exception as err:  # interop is optional here: fall back to the explicit mapping
            notes.append(f"interop.pytorch failed ({type(err).__name__}: {err}); native torch model used")
    return _torch_models.copy_weights(_torch_models.build(job.spec.name), job.variables)


def setup(job, capturable=False):
    """Build the model, check it against funcdl's logits, and put data and order on the device."""
    device, notes = _device(job), []
    if device.type == "cuda":  # this cell's own peak, also when cells share a process
        torch.cuda.reset_peak_memory_stats(device)
    module = build_module(job, notes).to(device).eval()
    with torch.no_grad():
        init_diff = max_abs_diff(module(_nchw(job.probe).to(device)).cpu().numpy(), job)
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, capturable=capturable)
    y = torch.from_numpy(job.y_train.astype(np.int64))
    order = torch.from_numpy(job.order.astype(np.int64))
    return Setup(module, optimizer, _nchw(job.x_train).to(device), y.to(device), order.to(device), device, notes,
                 init_diff)


def make_step(module, optimizer, opt_step=None):
    """``step(x, y)``: one Adam step on a batch (``opt_step`` replaces ``optimizer.step`` if given)."""
    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()
        (opt_step or optimizer.step)()
    return step


def _epochs(s, step=None, step_at=None):
    """Time every epoch of ``s.order``; ``step(x, y)`` gets gathered batches, ``step_at(index)`` the indices."""
    step_at = step_at or (lambda index: step(s.x.index_select(0, index), s.y.index_select(0, index)))

    def run_epoch(epoch):
        for batch in range(s.order.shape[1]):
            step_at(s.order[epoch, batch])
    _sync(s.device)  # the data copies to the device are done before the first epoch starts
    return time_epochs(run_epoch, s.order.shape[0], lambda: _sync(s.device))


def _finish(job, s, seconds, compile_seconds=0.0, notes=()):
    test_accuracy = None
    if job.cell["accuracy"] and job.x_test is not None:
        s.module.eval()
        with torch.no_grad():
            test_accuracy = accuracy(lambda x: s.module(_nchw(x).to(s.device)).cpu().numpy(), job.x_test, job.y_test)
    peak = torch.cuda.max_memory_allocated(s.device) if s.device.type == "cuda" else None
    return Measured(seconds, compile_seconds, test_accuracy=test_accuracy, peak_device_bytes=peak,
                    init_max_abs_diff=s.init_diff, notes=s.notes + list(notes))


def run_torch_eager(job):
    """Plain PyTorch: eager forward, autograd backward, ``optimizer.step()`` per batch."""
    s = setup(job)
    return _finish(job, s, _epochs(s, make_step(s.module, s.optimizer)))


def run_torch_compile(job):
    """``torch.compile`` of the model (forward and, via AOTAutograd, backward) and of ``optimizer.step``.

    The compile happens in the first epoch (counted in compile_seconds), with
    inductor's on-disk cache as found: a cold cache compiles much slower.
    """
    s = setup(job)
    compiled = torch.compile(s.module)
    opt_step = torch.compile(s.optimizer.step)
    try:
        seconds = _epochs(s, make_step(compiled, s.optimizer, opt_step))
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise Unavailable(f"torch.compile failed: {type(err).__name__}: {reason}") from err
    return _finish(job, s, seconds, notes=["inductor cache as found"])


def _reset(module, optimizer, snapshot):
    """Put back the initial weights and zero Adam's state in place (the CUDA graph keeps these tensors)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            tensor.copy_(snapshot[name])
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()


def capture(s, static_x, static_y):
    """A CUDA graph of one whole train step (forward, backward, capturable Adam) on the static batch."""
    snapshot = {k: v.detach().clone() for k, v in s.module.state_dict().items()}
    step = make_step(s.module, s.optimizer)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(CAPTURE_WARMUP_STEPS):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    s.optimizer.zero_grad(set_to_none=True)  # backward in the graph then allocates (not accumulates) grads
    with torch.cuda.graph(graph):
        F.cross_entropy(s.module(static_x), static_y).backward()
        s.optimizer.step()
    _reset(s.module, s.optimizer, snapshot)
    return graph


def run_torch_cudagraph(job):
    """The whole train step captured once as a CUDA graph and replayed per batch (GPU only).

    Each step copies its batch into the static input tensors and replays the
    graph: one launch a step. The warm-up steps before capture are undone
    (weights restored, Adam state zeroed) so training starts from funcdl's weights.
    """
    if not job.on_gpu:
        raise Unavailable("GPU only: captures the train step as a CUDA graph")
    s = setup(job, capturable=True)
    static_x = s.x.index_select(0, s.order[0, 0])
    static_y = s.y.index_select(0, s.order[0, 0])
    start = time.perf_counter()
    try:
        graph = capture(s, static_x, static_y)
    except Exception as err:
        raise Unavailable(f"CUDA graph capture failed: {type(err).__name__}: {str(err)[:200]}") from err
    _sync(s.device)
    capture_seconds = time.perf_counter() - start

    def step_at(index):  # gather straight into the graph's static inputs, then one launch
        torch.index_select(s.x, 0, index, out=static_x)
        torch.index_select(s.y, 0, index, out=static_y)
        graph.replay()
    return _finish(job, s, _epochs(s, step_at=step_at), capture_seconds,
                   notes=[f"compile = {CAPTURE_WARMUP_STEPS} warm-up steps + capture"])
