"""PyTorch bridge: forward parity both ways, bit-identical round trips, gradients, files, refusals."""
import copy
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional

from funcdl import nn  # noqa: E402
from funcdl.errors import ConversionError, FileFormatError, MissingDependencyError  # noqa: E402
from funcdl.io import flatten_variables, unflatten_variables  # noqa: E402
from interop.pytorch import (  # noqa: E402
    from_state_dict,
    from_torch,
    load_torch_file,
    load_torch_model,
    save_torch_file,
    to_state_dict,
    to_torch,
)

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def exact_math():
    """float32 everywhere, no TF32, XLA matmuls at full precision."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    with jax.default_matmul_precision("highest"):
        yield


# -- torch models written for these tests, tiny shapes -----------------------------------------
class MnistNet(tnn.Module):
    """The classic PyTorch MNIST CNN, shrunk: functional relu/max_pool/flatten/dropout in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 4, 3)
        self.conv2 = tnn.Conv2d(4, 6, 3)
        self.fc1 = tnn.Linear(6 * 4 * 4, 16)
        self.fc2 = tnn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(x, 0.25, self.training)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(F.dropout(x, 0.5, self.training)), dim=1)


class ViewNet(tnn.Module):
    """x.view(x.size(0), -1), x.reshape and tensor methods in forward."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 3, 3, padding=1)
        self.fc = tnn.Linear(3 * 4 * 4, 6)

    def forward(self, x):
        x = F.avg_pool2d(self.conv(x).relu(), 3, stride=1, padding=1, count_include_pad=False)
        x = x.view(x.size(0), -1)
        return torch.softmax(torch.tanh(self.fc(x.reshape(x.shape[0], -1))), dim=-1)


class Features(tnn.Module):
    """A CNN with stride, 'same', dilation, groups, both average-pool count modes, BatchNorm2d, adaptive pool."""

    def __init__(self):
        super().__init__()
        self.body = tnn.Sequential(
            tnn.Conv2d(3, 4, 3, stride=2, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
            tnn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=2),
            tnn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            tnn.Sequential(tnn.Conv2d(4, 6, (2, 3), padding="same", bias=False), tnn.LeakyReLU(0.1)),
            tnn.AvgPool2d(2, padding=1, count_include_pad=True),
            tnn.MaxPool2d(2, stride=1, padding=1))
        self.head = tnn.Linear(6 * 2 * 2, 4)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 2), 1))


class NormMlp(tnn.Module):
    """BatchNorm1d and LayerNorm, including norms of a flattened NCHW image and a (C, H, W) LayerNorm."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 3, 3)
        self.image_norm = tnn.LayerNorm((3, 2, 2))
        self.bn = tnn.BatchNorm1d(12, momentum=0.2, eps=1e-3)
        self.ln = tnn.LayerNorm(12)
        self.fc1 = tnn.Linear(12, 8)
        self.bn2 = tnn.BatchNorm1d(8)
        self.ln2 = tnn.LayerNorm(8, elementwise_affine=False)
        self.fc2 = tnn.Linear(8, 3)

    def forward(self, x):
        x = self.image_norm(self.conv(x))
        x = self.ln(self.bn(x.flatten(1)))
        x = self.ln2(F.gelu(self.bn2(self.fc1(x))))
        return F.softplus(self.fc2(x))


class LstmClassifier(tnn.Module):
    """Embedding -> 2-layer LSTM (dropout between) -> out[:, -1] -> Linear."""

    def __init__(self):
        super().__init__()
        self.embed = tnn.Embedding(11, 5)
        self.lstm = tnn.LSTM(5, 6, num_layers=2, batch_first=True, dropout=0.3)
        self.fc = tnn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.lstm(self.embed(x))
        return self.fc(out[:, -1, :])


class GruNet(tnn.Module):
    """2-layer GRU read through h_n[-1]."""

    def __init__(self):
        super().__init__()
        self.gru = tnn.GRU(4, 5, num_layers=2, batch_first=True)
        self.fc = tnn.Linear(5, 2)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h[-1])


class ImageRowsLstm(tnn.Module):
    """The MNIST LSTM pattern: (B, 1, H, W) image rows as a sequence, out[:, -1]."""

    def __init__(self):
        super().__init__()
        self.lstm = tnn.LSTM(5, 4, batch_first=True)
        self.fc = tnn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.lstm(x.view(x.size(0), 6, 5))
        return F.leaky_relu(self.fc(out[:, -1]), 0.3)


class RnnNet(tnn.Module):
    """One-layer RNN (relu) read through h_n.squeeze(0), and an LSTM's (h_n, c_n) tuple."""

    def __init__(self):
        super().__init__()
        self.lstm = tnn.LSTM(4, 5, batch_first=True)
        self.rnn = tnn.RNN(5, 3, batch_first=True, nonlinearity="relu")

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        _, h = self.rnn(torch.sigmoid(out))
        return h.squeeze(0)


def activations():
    """Every supported activation module, between Linears that keep the values moderate."""
    return tnn.Sequential(
        tnn.Flatten(), tnn.Linear(6, 6), tnn.ReLU(), tnn.Linear(6, 6), tnn.LeakyReLU(0.2), tnn.Linear(6, 6),
        tnn.Sigmoid(), tnn.Linear(6, 6), tnn.Tanh(), tnn.Linear(6, 6), tnn.GELU(), tnn.Linear(6, 6), tnn.GELU("tanh"),
        tnn.Linear(6, 6), tnn.Softplus(beta=2.0, threshold=1.0), tnn.Linear(6, 6), tnn.Softmax(dim=1),
        tnn.Linear(6, 6), tnn.Dropout(0.1), tnn.Identity(), tnn.LogSoftmax(dim=-1))


def mlp():
    return tnn.Sequential(tnn.Flatten(), tnn.Linear(12, 10), tnn.ReLU(), tnn.Linear(10, 4))


def _randomise_norms(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, tnn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (tnn.modules.batchnorm._BatchNorm, tnn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return module.eval()


def _image(*shape):
    return torch.randn(*shape)


MODELS = {
    "mnist_cnn": (MnistNet, lambda: _image(2, 1, 12, 12)),
    "view_methods": (ViewNet, lambda: _image(2, 2, 4, 4)),
    "conv_features": (Features, lambda: _image(2, 3, 9, 9)),
    "norm_mlp": (NormMlp, lambda: _image(3, 2, 4, 4)),
    "embedding_lstm": (LstmClassifier, lambda: torch.randint(0, 11, (3, 5))),
    "gru": (GruNet, lambda: torch.randn(3, 4, 4)),
    "image_rows_lstm": (ImageRowsLstm, lambda: _image(2, 1, 6, 5)),
    "rnn_lstm_tuple": (RnnNet, lambda: torch.randn(2, 3, 4)),
    "activations": (activations, lambda: torch.randn(4, 2, 3)),
}


def _build(name):
    torch.manual_seed(0)
    factory, example = MODELS[name]
    return _randomise_norms(factory()), example()


@functools.cache
def _converted(name):
    """(module, x, model, variables), converted once per test session; tests must not modify them."""
    module, x = _build(name)
    return (module, x) + from_torch(module, x)


def _nhwc(x):
    x = x.numpy()
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _run_funcdl(model, variables, x):
    return np.asarray(jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x))))  # one compile, not one per op


def _run_torch(module, x):
    with torch.no_grad():
        return module(x).numpy()


def _input_shape(x):
    return _nhwc(x).shape[1:]


def _in_order(variables):
    """{'params/0/kernel': array}: layers numbered in order, so a layer index shift does not matter."""
    flat = flatten_variables(variables)
    order = sorted({int(k.split("/")[1].split("_")[1]) for k in flat})
    rename = {f"layers_{index}": str(rank) for rank, index in enumerate(order)}
    return {"/".join([c, rename[layer], name]): v for (c, layer, name), v in
            ((tuple(k.split("/")), v) for k, v in flat.items())}


def _assert_same_variables(a, b, in_order=False):
    """Same names (or, with in_order, the same layers in the same order) and bit-identical arrays."""
    a, b = (_in_order(a), _in_order(b)) if in_order else (flatten_variables(a), flatten_variables(b))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


# -- forward parity and round trips ------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_torch_model_both_ways(name):
    """torch -> funcdl forward, funcdl -> torch forward, and both round trips bit-identical."""
    module, x, model, variables = _converted(name)
    funcdl_out = _run_funcdl(model, variables, x)
    assert np.max(np.abs(funcdl_out - _run_torch(module, x))) <= TOLERANCE
    exported = to_torch(model, variables, _input_shape(x))
    assert np.max(np.abs(_run_torch(exported, x) - funcdl_out)) <= TOLERANCE
    _, again = from_torch(exported, x)
    _assert_same_variables(again, variables)
    _assert_same_variables(from_state_dict(to_state_dict(model, variables, _input_shape(x)), model,
                                           _input_shape(x)), variables)


def test_lstm_import_keeps_torch_layout():
    module, x, model, variables = _converted("embedding_lstm")
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "LSTM", "Dropout", "LSTM", "Dense"]
    assert model.layers[1].return_sequences and not model.layers[3].return_sequences
    params = variables["params"]
    assert np.array_equal(params["layers_3"]["kernel"], module.lstm.weight_ih_l1.detach().numpy().T)
    assert np.array_equal(params["layers_3"]["recurrent_bias"], module.lstm.bias_hh_l1.detach().numpy())
    assert params["layers_1"]["kernel"].shape == (5, 24)


def test_batch_norm_training_step_matches_torch():
    """momentum m -> 1 - m and torch's unbiased running variance: one training step updates the same."""
    module = tnn.Sequential(tnn.Linear(3, 4), tnn.BatchNorm1d(4, momentum=0.2, eps=1e-3))
    x = torch.randn(5, 3)
    model, variables = from_torch(_randomise_norms(module), x)
    assert (model.layers[1].momentum, model.layers[1].epsilon) == (0.8, 1e-3)
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x.numpy())
    with torch.no_grad():
        expected = module.train()(x).numpy()
    assert np.max(np.abs(np.asarray(out) - expected)) <= TOLERANCE
    stats = state["batch_stats"]["layers_1"]
    assert np.max(np.abs(np.asarray(stats["mean"]) - module[1].running_mean.numpy())) <= TOLERANCE
    assert np.max(np.abs(np.asarray(stats["var"]) - module[1].running_var.numpy())) <= TOLERANCE


def test_flatten_permutes_first_dense_rows():
    module, x, model, variables = _converted("mnist_cnn")
    kernel = np.asarray(variables["params"]["layers_7"]["kernel"])  # fc1 after Flatten: rows in (H, W, C) order
    weight = module.fc1.weight.detach().numpy().reshape(16, 6, 4, 4)  # (out, C, H, W)
    assert np.array_equal(kernel, weight.transpose(2, 3, 1, 0).reshape(96, 16))


def _funcdl_models():
    return {
        "zoo_like_cnn": (nn.Sequential([
            nn.Conv2D(4, 3, strides=2, padding="same"), nn.relu, nn.BatchNorm(momentum=0.99, epsilon=1e-3),
            nn.Conv2D(4, 2, padding="same", activation="relu"), nn.MaxPool2D(3, strides=2, padding="same"),
            nn.AvgPool2D(2, strides=1, padding="same"), nn.Flatten(), nn.Dropout(0.5), nn.Dense(7),
            nn.Softmax()]), (8, 8, 2), jnp.float32),
        "nhwc_head": (nn.Sequential([nn.Conv2D(3, 3), nn.Dense(5), nn.LayerNorm(num_axes=2), nn.Conv2D(2, 1),
                                     nn.Reshape((4, 8)), nn.GELU(approximate=True), nn.Flatten(), nn.tanh]),
                      (6, 6, 2), jnp.float32),
        "image_rows_gru": (nn.Sequential([nn.ImageRows(), nn.GRU(6, return_sequences=True), nn.GRU(6),
                                          nn.Dense(3, activation="log_softmax")]), (5, 4, 2), jnp.float32),
        "rnn_stack": (nn.Sequential([nn.Embedding(9, 4), nn.SimpleRNN(5, return_sequences=True), nn.Dropout(0.2),
                                     nn.SimpleRNN(5, return_sequences=True), nn.LSTM(3)]), (6,), jnp.int32),
    }


@pytest.mark.parametrize("name", list(_funcdl_models()))
def test_funcdl_model_to_torch_and_back(name):
    model, input_shape, dtype = _funcdl_models()[name]
    rng = np.random.default_rng(0)
    if dtype == jnp.int32:
        x = jnp.asarray(rng.integers(0, 9, (3,) + input_shape), jnp.int32)
    else:
        x = jnp.asarray(rng.standard_normal((3,) + input_shape), jnp.float32)
    # random variables of the right shapes (running variances positive); model.init would compile for seconds
    shapes = nn.variable_shapes(nn.init_shapes(model, input_shape, dtype))
    variables = unflatten_variables({k: (rng.uniform(0.5, 1.5, shape) if k.endswith("/var") else
                                         rng.standard_normal(shape) * 0.5).astype(np.float32)
                                     for k, shape in shapes.items()})
    exported = to_torch(model, variables, input_shape)
    x_torch = torch.from_numpy(np.array(x).transpose(0, 3, 1, 2) if x.ndim == 4 else np.array(x, np.int64))
    assert np.max(np.abs(_run_torch(exported, x_torch) - np.asarray(jax.jit(model.apply)(variables, x)))) <= TOLERANCE
    _, again = from_torch(exported, x_torch)  # fused activations become layers: compare layer by layer
    _assert_same_variables(again, variables, in_order=True)
    state = to_state_dict(model, variables, input_shape)
    _assert_same_variables(from_state_dict(state, model, input_shape), variables)


def test_from_state_dict_maps_a_torch_models_groups_in_order():
    module, x = _build("mnist_cnn")
    model = nn.Sequential([nn.Conv2D(4, 3), nn.relu, nn.Conv2D(6, 3), nn.relu, nn.MaxPool2D(2), nn.Flatten(),
                           nn.Dense(16), nn.relu, nn.Dense(5), nn.log_softmax])
    variables = from_state_dict(module.state_dict(), model, (12, 12, 1))
    assert np.max(np.abs(_run_funcdl(model, variables, x) - _run_torch(module, x))) <= TOLERANCE


def test_from_state_dict_errors_name_the_tensor():
    torch.manual_seed(0)
    module = mlp()
    model = nn.Sequential([nn.Flatten(), nn.Dense(10), nn.relu, nn.Dense(4)])
    state = module.state_dict()
    missing = {k: v for k, v in state.items() if k != "3.bias"}
    with pytest.raises(ConversionError, match="needs"):
        from_state_dict(missing, model, (3, 4))
    with pytest.raises(ConversionError, match="parameter groups"):
        from_state_dict({**state, "extra.weight": torch.zeros(2)}, model, (3, 4))
    with pytest.raises(ConversionError, match=r"3\.weight.*shape \(4, 11\)"):
        from_state_dict({**state, "3.weight": torch.zeros(4, 11)}, model, (3, 4))


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["conv_features", "embedding_lstm"])
def test_gradients_agree(name):
    module, x, model, variables = _converted(name)
    module = copy.deepcopy(module)
    weights = torch.randn(*module(x).shape)
    (module(x) * weights).sum().backward()
    grads_module = copy.deepcopy(module)
    with torch.no_grad():
        for param, grad_holder in zip(grads_module.parameters(), module.parameters()):
            param.copy_(grad_holder.grad)
    _, torch_grads = from_torch(grads_module, x)  # torch's gradients in funcdl's layout

    def loss(params):
        out = model.apply({**variables, "params": params}, jnp.asarray(_nhwc(x)))
        return jnp.sum(out * jnp.asarray(weights.numpy()))
    jax_grads = flatten_variables({"params": jax.jit(jax.grad(loss))(variables["params"])})
    expected = {k: v for k, v in flatten_variables(torch_grads).items() if k.startswith("params/")}
    assert jax_grads.keys() == expected.keys()
    for key, grad in jax_grads.items():
        scale = max(np.max(np.abs(expected[key])), 1e-6)
        assert np.max(np.abs(grad - expected[key])) <= TOLERANCE * scale, key


# -- files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pt2"])
def test_file_round_trip(tmp_path, suffix):
    module, x, model, variables = _converted("norm_mlp" if suffix != ".pt2" else "embedding_lstm")
    path = tmp_path / f"model{suffix}"
    save_torch_file(path, model, variables, _input_shape(x))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    state = load_torch_file(path)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    _assert_same_variables(from_state_dict(state, model, _input_shape(x)), variables)
    if suffix in (".pt2", ".safetensors"):  # these files carry the funcdl architecture
        loaded_model, loaded, input_shape = load_torch_model(path)
        assert nn.to_config(loaded_model) == nn.to_config(model) and input_shape == _input_shape(x)
    else:
        loaded_model, loaded, _ = load_torch_model(path, model, _input_shape(x))
    _assert_same_variables(loaded, variables)
    if suffix == ".pt2":
        program = torch.export.load(str(path))
        bigger = torch.randint(0, 11, (5, 5))  # the batch axis is dynamic
        expected = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(bigger.numpy())))
        assert np.max(np.abs(program.module()(bigger).detach().numpy() - expected)) <= TOLERANCE


def test_plain_torch_save_state_dict_loads(tmp_path):
    module, x, model, expected = _converted("mnist_cnn")
    torch.save({"epoch": 3, "model_state_dict": module.state_dict()}, tmp_path / "checkpoint.pth")
    _assert_same_variables(from_state_dict(load_torch_file(tmp_path / "checkpoint.pth"), model, (12, 12, 1)), expected)


class _Payload:
    """Unpickling this touches a file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)
    with pytest.raises(FileFormatError, match="refused") as info:
        load_torch_file(path)
    assert "\n" not in str(info.value) and "safetensors" in str(info.value)
    assert not marker.exists()
    torch.save(tnn.Linear(2, 2), tmp_path / "module.pt")  # a whole pickled module is refused too
    with pytest.raises(FileFormatError, match="refused"):
        load_torch_file(tmp_path / "module.pt")
    control = tmp_path / "control"  # the payload is live: an unsafe load would run it
    torch.save({"payload": _Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_pt2_with_pickled_payload_is_refused(tmp_path):
    import zipfile
    x = torch.randn(3, 3, 4)
    model, variables = from_torch(mlp().eval(), x)
    good = tmp_path / "good.pt2"
    save_torch_file(good, model, variables, _input_shape(x))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    payload = tmp_path / "payload.pt"
    torch.save((_Payload(marker),), payload)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            data = payload.read_bytes() if "sample_inputs" in item.filename else source.read(item.filename)
            target.writestr(item, data)
    with pytest.raises(FileFormatError, match="refused"):
        load_torch_file(evil)
    assert not marker.exists()


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="unknown PyTorch file type"):
        load_torch_file(__file__)
    with pytest.raises(FileFormatError, match="does not exist"):
        load_torch_file(tmp_path / "absent.pt")


# -- refusals ----------------------------------------------------------------------------------
class _MatMul(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc = tnn.Linear(4, 4)

    def forward(self, x):
        return torch.matmul(x, self.fc(x))


@pytest.mark.parametrize("module, x, match", [
    (lambda: tnn.Sequential(tnn.Conv3d(1, 2, 2)), lambda: torch.randn(1, 1, 3, 3, 3), "Conv3d"),
    (lambda: tnn.Sequential(tnn.Linear(4, 8), tnn.Transformer(8, 2, 1, 1, 16)), None, "Transformer"),
    (_MatMul, lambda: torch.randn(4, 4), "matmul"),
    (lambda: tnn.Sequential(tnn.Conv2d(1, 2, 3), tnn.MaxPool2d(2, ceil_mode=True)), lambda: torch.randn(1, 1, 7, 7),
     "ceil_mode"),
    (lambda: tnn.Sequential(tnn.LSTM(3, 4)), lambda: torch.randn(2, 5, 3), "batch_first"),
    (lambda: tnn.Sequential(tnn.AdaptiveAvgPool2d(2)), lambda: torch.randn(2, 1, 5, 5), "divide"),
    (lambda: tnn.Sequential(tnn.Conv2d(1, 2, 3), tnn.Flatten()), lambda: torch.randn(2, 1, 5, 5), "Linear"),
])
def test_unsupported_pieces_raise_conversion_error(module, x, match):
    example = x() if x is not None else torch.randn(2, 4)
    with pytest.raises(ConversionError, match=match) as info:
        from_torch(module(), example)
    if match in ("Conv3d", "Transformer", "matmul"):  # points to the list instead of printing it
        assert "`funcdl convert --list-supported` lists" in str(info.value) and "Linear" not in str(info.value)


def test_missing_torch_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees when it is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'funcdl\[torch\]'") as info:
        to_torch(nn.Sequential([nn.Dense(2)]), {}, (3,))
    assert isinstance(info.value, ImportError)  # code that catches ImportError for optional imports still works
