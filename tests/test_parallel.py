"""Data parallelism and multi-host runs: N devices (and 2 processes) give the one-device result.

XLA_FLAGS must be set before jax starts, so every multi-device run happens in a
subprocess with ``--xla_force_host_platform_device_count``.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn, parallel
from funcdl.cli import main
from funcdl.errors import ConfigError

FOUR_DEVICES = r"""
import json, sys
import jax, numpy as np
import funcdl as fd
from funcdl import nn, parallel
from funcdl.errors import ConfigError

rng = np.random.default_rng(0)
x = rng.random((100, 8, 8, 1), dtype=np.float32)   # 100 = 3 batches of 32 + a masked partial one
y = rng.integers(0, 10, 100).astype(np.int32)
# No bias before BatchNorm: its true gradient is 0, so Adam would amplify rounding noise into lr-sized steps.
model = nn.Sequential([nn.Conv2D(4, 3, use_bias=False), nn.BatchNorm(), nn.relu, nn.Flatten(), nn.Dropout(0.2),
                       nn.Dense(10)])
kwargs = dict(optimizer=fd.optim.adam(1e-2), epochs=2, batch_size=32, verbose=False)
one = fd.fit(model, (x, y), **kwargs)
four = fd.fit(model, (x, y), data_parallel=True, **kwargs)
difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                 for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(four.variables)))
kernel = four.variables["params"]["layers_0"]["kernel"]
from funcdl.train import TrainState, make_train_epoch, make_train_step
mesh, dense, optimizer = parallel.data_mesh(32), nn.Sequential([nn.Flatten(), nn.Dense(10)]), fd.optim.sgd(0.1)
step = parallel.shard_batches(make_train_step(dense, fd.losses.cross_entropy, optimizer), mesh)
epoch = make_train_epoch(step, 32)
variables = dense.init(jax.random.key(0), x[:1])
state = TrainState(variables, optimizer.init(variables["params"]), np.int32(0))
epoch, state, data, key = parallel.distribute(mesh, epoch, state, x, y, jax.random.key(0))
program = jax.jit(epoch).lower(state, *data, key).compile().as_text()
try:
    fd.fit(model, (x, y), batch_size=30, data_parallel=True, verbose=False)
    error = None
except ConfigError as err:
    error = str(err)
# A NaN loss on example 20 (batch 3 of 8): the epoch is re-run with checked steps on the mesh too.
from funcdl.errors import NonFiniteError
xp, yp = rng.normal(size=(32, 3)).astype(np.float32), rng.normal(size=(32, 1)).astype(np.float32)
yp[20, 0] = 1000.0
def poisoned(outputs, targets):
    return jax.numpy.where(targets[:, 0] > 100, jax.numpy.nan, ((outputs - targets) ** 2)[:, 0])
try:
    fd.fit(nn.Sequential([nn.Dense(1)]), (xp, yp), loss=poisoned, optimizer=fd.optim.sgd(0.1), batch_size=8,
           shuffle=False, data_parallel=True, verbose=False)
    nonfinite = None
except NonFiniteError as err:
    nonfinite = [err.step, bool(all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(err.variables)))]
print(json.dumps({"devices": jax.device_count(), "difference": difference,
                  "kernel_devices": len(kernel.sharding.device_set),
                  "replicated": kernel.sharding.is_fully_replicated,
                  "one": one.history, "four": four.history,
                  "recompiles": four.compiles_after_first_epoch, "error": error, "nonfinite": nonfinite,
                  "all_reduce": "all-reduce" in program, "per_device_batch": "f32[8,64]" in program}))
"""


def _run(code, devices, *args, **popen):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _last_json(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_four_devices_match_one_device():
    result = _last_json(_run(FOUR_DEVICES, 4))
    assert result["devices"] == 4
    assert result["kernel_devices"] == 4 and result["replicated"]
    assert result["difference"] < 1e-6
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(result["four"][key], result["one"][key], rtol=1e-6, atol=1e-6)
    assert result["recompiles"] == 0
    assert result["all_reduce"] and result["per_device_batch"]  # 32 examples split 4 x 8, gradients summed
    assert "batch_size 30 does not split evenly over 4 devices" in result["error"]
    assert result["nonfinite"] == [2, True]  # stopped at step 2 with finite last-good parameters


def test_data_parallel_errors():
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    with pytest.raises(ConfigError, match="cannot be combined with eager"):
        fd.fit(nn.Sequential([nn.Dense(2)]), (x, y), batch_size=4, eager=True, data_parallel=True, verbose=False)
    with pytest.raises(ConfigError, match="does not split evenly over 4 devices"):
        parallel.data_mesh(6, devices=jax.devices() * 4)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parallel.initialize("localhost", 2, 0)
    with pytest.raises(ConfigError, match=r"process_id must be in \[0, 2\)"):
        parallel.initialize("127.0.0.1:1234", 2, 2)
    assert main(["train", "--num-processes", "2"]) == 2


MULTI_HOST = r"""
import sys
from funcdl.cli import main
port, process_id, out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.exit(main(["train", "--model", "mlp", "--dataset", "digits", "--limit", "280", "--epochs", "2",
               "--batch-size", "32", "--quiet", "--out", out, "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", process_id]))
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_match_one_process(tmp_path):
    """2 processes x 2 CPU devices on 127.0.0.1 through the CLI == one process, one device."""
    port = _free_port()
    processes = [_run(MULTI_HOST, 2, str(port), str(index), str(tmp_path / f"run{index}")) for index in (0, 1)]
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    # only process 0 reports (gloo itself prints its connection lines on both)
    assert "test accuracy" in outputs[0][0] and "test accuracy" not in outputs[1][0]
    assert not (tmp_path / "run1").exists()
    # 280 examples: 28 held out for validation, 252 train, which split evenly over the 4 devices (none dropped)
    single = ["train", "--model", "mlp", "--dataset", "digits", "--limit", "280", "--epochs", "2",
              "--batch-size", "32", "--quiet", "--out", str(tmp_path / "single")]
    assert main(single) == 0
    _, multi, _ = fd.load_model(tmp_path / "run0" / "model.funcdl")
    _, one, _ = fd.load_model(tmp_path / "single" / "model.funcdl")
    for a, b in zip(jax.tree.leaves(multi), jax.tree.leaves(one)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    history = json.loads((tmp_path / "run0" / "history.json").read_text())
    assert history["processes"] == 2 and history["devices"] == 4 and history["data_parallel"]
