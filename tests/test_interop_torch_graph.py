"""Graphs from PyTorch: from_torch beyond chains (residual adds, concatenations, branches, several outputs, nested
containers) and .pt2 programs written by torch.export, converted through their ATen graphs (no --arch, never
unpickled)."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional

from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from funcdl.io import load_model  # noqa: E402
from interop.pytorch import from_exported, from_torch, load_torch_model, to_torch  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def exact_math():
    """float32 everywhere, XLA matmuls at full precision, fixed torch seed."""
    torch.manual_seed(0)
    with jax.default_matmul_precision("highest"):
        yield


def _randomise_batch_norms(module):
    """Non-trivial running statistics, so BatchNorm's conversion is really checked."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return module.eval()


def _forward_gap(module, x):
    """(funcdl model, max abs difference of every output) of ``from_torch(module)`` against torch."""
    model, variables = from_torch(module, x)
    with torch.no_grad():
        want = module(x)
    images = x.numpy().transpose(0, 2, 3, 1) if x.ndim == 4 else x.numpy()
    got = model.apply(variables, images)
    wants = want if isinstance(want, tuple) else (want,)
    gots = got if isinstance(got, tuple) else (got,)
    assert len(gots) == len(wants)
    gaps = []
    for w, g in zip(wants, gots):
        w = w.numpy()
        w = w.transpose(0, 2, 3, 1) if w.ndim == 4 else w
        assert np.asarray(g).shape == w.shape
        gaps.append(float(np.max(np.abs(np.asarray(g) - w))))
    return model, gaps


# -- torchvision-style ResNet, written here --------------------------------------------------------
class BasicBlock(tnn.Module):
    """torchvision's BasicBlock: two 3x3 convs, ``out += identity`` (a projection when the shape changes)."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                             tnn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(tnn.Module):
    """A small torchvision-style ResNet: stem, two stages of BasicBlocks, adaptive pooling, flatten, fc."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(8)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = tnn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = tnn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def test_resnet_becomes_a_graph_equal_to_torch():
    module = _randomise_batch_norms(ResNet())
    x = torch.randn(2, 3, 16, 16)
    model, gaps = _forward_gap(module, x)
    assert isinstance(model, nn.Graph)
    assert max(gaps) <= TOLERANCE, gaps
    names = {node.name for node in model.nodes}
    assert {"layer1.0.conv1", "layer2.0.downsample.0", "fc"} <= names
    adds = [node for node in model.nodes if isinstance(node.layer, nn.Add)]
    assert len(adds) == 4
    assert adds[2].inputs == ("layer2.0.bn2", "layer2.0.downsample.1")


def test_resnet_graph_survives_its_config():
    module = _randomise_batch_norms(ResNet())
    x = torch.randn(2, 3, 16, 16)
    model, variables = from_torch(module, x)
    again = nn.from_config(nn.to_config(model))
    images = x.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(again.apply(variables, images)),
                                  np.asarray(model.apply(variables, images)))


# -- an Inception-like block: four branches joined by torch.cat ------------------------------------
class Inception(tnn.Module):
    """GoogLeNet-style block (1x1, 1x1->3x3, 1x1->5x5, pool->1x1), concatenated on channels, then a head."""

    def __init__(self):
        super().__init__()
        self.b1 = tnn.Conv2d(3, 4, 1)
        self.b2 = tnn.Sequential(tnn.Conv2d(3, 2, 1), tnn.ReLU(), tnn.Conv2d(2, 4, 3, padding=1))
        self.b3 = tnn.Sequential(tnn.Conv2d(3, 2, 1), tnn.ReLU(), tnn.Conv2d(2, 3, 5, padding=2))
        self.b4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1), tnn.Conv2d(3, 2, 1))
        self.head = tnn.Linear(13 * 8 * 8, 6)

    def forward(self, x):
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)
        return self.head(torch.flatten(F.relu(y), 1))


def test_inception_concat_equals_torch():
    x = torch.randn(3, 3, 8, 8)
    model, gaps = _forward_gap(Inception().eval(), x)
    assert isinstance(model, nn.Graph)
    assert max(gaps) <= TOLERANCE, gaps
    cat = next(node for node in model.nodes if isinstance(node.layer, nn.Concatenate))
    assert cat.layer.axis == -1 and len(cat.inputs) == 4


# -- several outputs, torch.add, ModuleDict / ModuleList -------------------------------------------
class TwoHeads(tnn.Module):
    """A VAE encoder: a shared trunk in a ModuleList, (mu, logvar) heads in a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.trunk = tnn.ModuleList([tnn.Linear(10, 12), tnn.Tanh(), tnn.Linear(12, 12)])
        self.heads = tnn.ModuleDict({"mu": tnn.Linear(12, 3), "logvar": tnn.Linear(12, 3)})

    def forward(self, x):
        for layer in self.trunk:
            x = layer(x)
        h = torch.add(F.relu(x), x)
        return self.heads["mu"](h), self.heads["logvar"](h)


def test_two_heads_give_a_tuple_equal_to_torch():
    model, gaps = _forward_gap(TwoHeads().eval(), torch.randn(4, 10))
    assert isinstance(model, nn.Graph) and model.outputs == ("heads.mu", "heads.logvar")
    assert len(gaps) == 2 and max(gaps) <= TOLERANCE, gaps


class Gated(tnn.Module):
    """x * sigmoid(gate(x)) - x.sub(shortcut): multiply and subtract merges, a flattened image in two heads."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 3, 3)
        self.gate = tnn.Linear(3 * 4 * 4, 48)
        self.shortcut = tnn.Linear(3 * 4 * 4, 48)

    def forward(self, x):
        x = torch.flatten(self.conv(x), 1)
        y = x * torch.sigmoid(self.gate(x))
        return y.sub(self.shortcut(x))


def test_merging_a_flattened_image_with_features_is_refused():
    x = torch.randn(2, 2, 6, 6)
    with pytest.raises(ConversionError, match="flattened"):
        from_torch(Gated().eval(), x)  # x is (C, H, W)-ordered in torch, (H, W, C) in funcdl: not combinable


def test_chain_stays_sequential():
    module = tnn.Sequential(tnn.Linear(4, 5), tnn.ReLU(), tnn.Linear(5, 2)).eval()
    model, gaps = _forward_gap(module, torch.randn(3, 4))
    assert isinstance(model, nn.Sequential) and max(gaps) <= TOLERANCE


class Residual(tnn.Module):
    def __init__(self):
        super().__init__()
        self.a = tnn.Linear(6, 6)
        self.b = tnn.Linear(6, 6)

    def forward(self, x):
        return (self.a(x) * torch.sigmoid(self.b(x))).sub(x) + torch.maximum(x, torch.relu(x))


def test_multiply_subtract_maximum_equal_torch():
    model, gaps = _forward_gap(Residual().eval(), torch.randn(5, 6))
    kinds = {type(node.layer) for node in model.nodes}
    assert {nn.Multiply, nn.Subtract, nn.Add, nn.Maximum} <= kinds
    assert max(gaps) <= TOLERANCE, gaps


class AddsConstant(tnn.Module):
    def __init__(self):
        super().__init__()
        self.a = tnn.Linear(3, 3)

    def forward(self, x):
        return self.a(x) + 1.0


class Broadcast(tnn.Module):
    def __init__(self):
        super().__init__()
        self.a = tnn.Linear(3, 1)

    def forward(self, x):
        return self.a(x) + x


def test_constants_convert_and_unsupported_merges_name_themselves():
    model, gaps = _forward_gap(AddsConstant().eval(), torch.randn(2, 3))
    assert max(gaps) <= TOLERANCE and isinstance(model.layers[-1], nn.Rescaling)
    with pytest.raises(ConversionError, match="no broadcasting"):
        from_torch(Broadcast().eval(), torch.randn(2, 3))


# -- .pt2 programs ---------------------------------------------------------------------------------
class MLP(tnn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = tnn.Linear(6, 8)
        self.norm = tnn.BatchNorm1d(8)
        self.out = tnn.Linear(8, 3)

    def forward(self, x):
        return F.log_softmax(self.out(F.gelu(self.norm(self.hidden(x)))), dim=-1)


class CNN(tnn.Module):
    """The classic MNIST CNN, shrunk, with an average pool and a global mean."""

    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = tnn.Conv2d(4, 6, 3, stride=2)
        self.fc = tnn.Linear(6 * 3 * 3, 5)
        self.head = tnn.Linear(6, 5)

    def forward(self, x):
        x = F.avg_pool2d(torch.sigmoid(self.conv1(x)), 2)
        x = F.max_pool2d(F.leaky_relu(self.conv2(x), 0.1), 1)
        return self.fc(torch.flatten(x, 1)) + self.head(x.mean(dim=(2, 3)))


def _save(module, x, path, decompose=False):
    program = torch.export.export(module.eval(), (x,))
    if decompose:  # the ATen IR older torch wrote: convolution, addmm of t(weight), _native_batch_norm_legit...
        program = program.run_decompositions()
    torch.export.save(program, str(path))
    return path


def _gaps(model, variables, module, x):
    with torch.no_grad():
        want = module(x)
    got = model.apply(variables, x.numpy().transpose(0, 2, 3, 1) if x.ndim == 4 else x.numpy())
    wants, gots = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    return [float(np.max(np.abs(np.asarray(g) - w.numpy()))) for g, w in zip(gots, wants)]


@pytest.mark.parametrize("decompose", [False, True], ids=["export", "decomposed"])
@pytest.mark.parametrize("make, shape", [
    (MLP, (4, 6)), (CNN, (2, 1, 14, 14)), (ResNet, (2, 3, 16, 16)), (Inception, (2, 3, 8, 8)), (TwoHeads, (3, 10)),
], ids=["mlp", "cnn", "resnet", "inception", "two_heads"])
def test_pt2_file_converts_without_architecture(tmp_path, make, shape, decompose):
    module = _randomise_batch_norms(make())
    x = torch.randn(*shape)
    path = _save(module, x, tmp_path / "net.pt2", decompose)
    model, variables, input_shape = load_torch_model(path)
    assert input_shape == ((shape[2], shape[3], shape[1]) if len(shape) == 4 else shape[1:])
    gaps = _gaps(model, variables, module, x)
    assert max(gaps) <= TOLERANCE, gaps
    if make in (ResNet, Inception, TwoHeads, CNN):
        assert isinstance(model, nn.Graph)


def test_dynamic_batch_program_converts():
    module = _randomise_batch_norms(CNN())
    x = torch.randn(3, 1, 14, 14)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    model, variables, input_shape = from_exported(program)
    assert input_shape == (14, 14, 1)
    assert max(_gaps(model, variables, module, x)) <= TOLERANCE


def test_training_mode_program_is_refused_in_one_line():
    program = torch.export.export(MLP().train(), (torch.randn(4, 6),))  # BatchNorm updates its buffers
    with pytest.raises(ConversionError, match=r"exported in training mode; call module.eval\(\)") as info:
        from_exported(program)
    assert "\n" not in str(info.value)


def test_resnet_nodes_are_named_by_module(tmp_path):
    module = _randomise_batch_norms(ResNet())
    x = torch.randn(2, 3, 16, 16)
    model, _, _ = from_exported(torch.export.export(module, (x,)))
    names = {node.name for node in model.nodes}
    assert {"conv1", "layer1.0.bn2", "layer2.0.downsample.0", "fc"} <= names


class Unsupported(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc = tnn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


def test_unsupported_op_names_itself_node_and_source_line(tmp_path):
    path = _save(Unsupported(), torch.randn(2, 4), tmp_path / "net.pt2")
    with pytest.raises(ConversionError, match=r"aten\.cumsum.*node cumsum.*line \d+.*torch\.cumsum") as info:
        from_exported(path)
    assert "\n" not in str(info.value)


def test_cli_converts_and_inspects_a_pt2(tmp_path, capsys):
    module = _randomise_batch_norms(ResNet())
    x = torch.randn(2, 3, 16, 16)
    path = _save(module, x, tmp_path / "net.pt2")
    assert main(["inspect", str(path)]) == 0
    assert "layer2.0.downsample.0" in capsys.readouterr().out
    assert main(["convert", str(path), str(tmp_path / "net.funcdl")]) == 0
    loaded = load_model(tmp_path / "net.funcdl")
    model, variables = loaded[0], loaded[1]
    assert max(_gaps(model, variables, module, x)) <= TOLERANCE


# -- more modules: ReLU6, Hardswish, SiLU, ELU, channel dropout, Identity -----------------------------------
class MobileStyle(tnn.Module):
    """A MobileNet-flavoured CNN: ReLU6, Hardswish, SiLU, ELU, Dropout2d/1d, Identity, adaptive pooling."""

    def __init__(self, drop1d=True):
        super().__init__()
        self.features = tnn.Sequential(tnn.Conv2d(3, 6, 3, padding=1), tnn.ReLU6(), tnn.Dropout2d(0.3),
                                       tnn.Conv2d(6, 6, 3, padding=1, groups=6), tnn.Hardswish(), tnn.Identity(),
                                       tnn.AdaptiveAvgPool2d(1))
        self.fc = tnn.Linear(6, 8)
        self.act = tnn.ELU(alpha=0.5)
        self.drop = tnn.Dropout1d(0.2) if drop1d else tnn.Identity()
        self.out = tnn.Linear(8, 4)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.out(F.silu(self.drop(self.act(self.fc(x)))))


def test_mobile_style_modules_convert_both_ways():
    module = MobileStyle().eval()
    x = torch.randn(2, 3, 8, 8) * 4  # wide enough to reach ReLU6's and Hardswish's bends
    model, gaps = _forward_gap(module, x)
    assert isinstance(model, nn.Sequential) and max(gaps) <= TOLERANCE, gaps
    kinds = [type(layer).__name__ for layer in model.layers]
    assert {"ReLU6", "HardSwish", "ELU", "SiLU"} <= set(kinds) and "Dropout" not in kinds
    assert next(layer for layer in model.layers if isinstance(layer, nn.ELU)).alpha == 0.5
    _, variables = from_torch(module, x)
    back = to_torch(model, variables, (8, 8, 3))
    with torch.no_grad():
        assert float((back(x) - module(x)).abs().max()) <= TOLERANCE


def test_mobile_style_pt2_converts(tmp_path):
    module = MobileStyle(drop1d=False).eval()  # Dropout1d of (N, C) exports as unsqueeze(0)/squeeze: not read
    x = torch.randn(2, 3, 8, 8) * 4
    model, variables, _ = load_torch_model(_save(module, x, tmp_path / "net.pt2"))
    assert max(_gaps(model, variables, module, x)) <= TOLERANCE
