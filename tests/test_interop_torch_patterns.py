"""Patterns of published PyTorch models: recurrent tutorial forwards (time-first, zero initial states, last
steps, final states), modules doing their own math on their own parameters, and the errors for what is
still refused."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional

from funcdl import nn  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop.pytorch import from_exported, from_torch  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def exact_math():
    """float32 everywhere, XLA matmuls at full precision, fixed torch seed."""
    torch.manual_seed(0)
    with jax.default_matmul_precision("highest"):
        yield


def _funcdl_input(x):
    """funcdl's layout of a torch input: NCHW images NHWC, everything else as is."""
    x = x.numpy()
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _gaps(model, variables, module, *xs):
    """Max abs difference of every output of ``model`` against ``module`` (NCHW outputs compared NHWC)."""
    with torch.no_grad():
        want = module(*xs)
    got = model.apply(variables, *[_funcdl_input(x) for x in xs])
    wants, gots = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    assert len(wants) == len(gots)
    gaps = []
    for w, g in zip(wants, gots):
        w = w.numpy().transpose(0, 2, 3, 1) if w.ndim == 4 else w.numpy()
        assert np.asarray(g).shape == w.shape
        gaps.append(float(np.max(np.abs(np.asarray(g) - w))))
    return gaps


def _torch_gap(module, x):
    """(model, max abs difference) of ``from_torch(module)`` against torch on ``x``."""
    module = module.eval()
    model, variables = from_torch(module, x)
    return model, max(_gaps(model, variables, module, x))


def _export_gap(module, x, tmp_path, decompose=False):
    """Max abs difference of a .pt2 file written by torch.export.save and read by funcdl's reader."""
    program = torch.export.export(module.eval(), (x,))
    if decompose:
        program = program.run_decompositions()
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    model, variables, _ = from_exported(path)
    return model, max(_gaps(model, variables, module, x))


# -- modules doing their own math on their own parameters ------------------------------------------------------
class LinearLayer(tnn.Module):
    """A hand-written linear layer: ``x @ self.w + self.b`` with w stored (in, out)."""

    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.w = tnn.Parameter(torch.randn(fan_in, fan_out))
        self.b = tnn.Parameter(torch.randn(fan_out))

    def forward(self, x):
        return x @ self.w + self.b


class MatmulNet(tnn.Module):
    """torch.matmul with a (in, out) weight, F.linear with an (out, in) one, a transposed weight."""

    def __init__(self):
        super().__init__()
        self.w1 = tnn.Parameter(torch.randn(6, 8))
        self.b1 = tnn.Parameter(torch.randn(8))
        self.w2 = tnn.Parameter(torch.randn(5, 8))
        self.b2 = tnn.Parameter(torch.randn(5))
        self.w3 = tnn.Parameter(torch.randn(4, 5))

    def forward(self, x):
        x = torch.relu(torch.matmul(x, self.w1) + self.b1)
        x = torch.tanh(F.linear(x, self.w2, self.b2))
        return x @ self.w3.t()


class AffineCNN(tnn.Module):
    """Per-channel affine on its own parameters, a registered mean buffer, F.conv2d on its own kernel, scalars."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, -0.25]).view(1, 2, 1, 1))
        self.conv = tnn.Conv2d(2, 3, 3, bias=False)
        self.scale = tnn.Parameter(torch.rand(1, 3, 1, 1) + 0.5)
        self.shift = tnn.Parameter(torch.randn(3, 1, 1))
        self.kernel = tnn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)
        self.bias = tnn.Parameter(torch.randn(4))
        self.fc_w = tnn.Parameter(torch.randn(5, 4 * 2 * 2) * 0.2)

    def forward(self, x):
        x = (x - self.mean) / 4.0
        x = self.conv(x) * self.scale + self.shift
        x = F.relu(F.conv2d(x, self.kernel, self.bias, stride=2, padding=1))
        return F.linear(torch.flatten(x, 1), self.fc_w) * 0.5 + 1


def test_linear_layer_on_its_own_parameters_becomes_a_dense():
    module = tnn.Sequential(LinearLayer(4, 3), tnn.ReLU(), LinearLayer(3, 2))
    model, gap = _torch_gap(module, torch.randn(5, 4))
    assert gap <= TOLERANCE
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "ReLU", "Dense"]
    assert model.layers[0].use_bias


def test_matmul_linear_and_transposed_weights_convert():
    model, gap = _torch_gap(MatmulNet(), torch.randn(3, 6))
    assert gap <= TOLERANCE
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "ReLU", "Dense", "Tanh", "Dense"]


def test_per_channel_affine_buffer_and_functional_conv_convert():
    model, gap = _torch_gap(AffineCNN(), torch.randn(2, 2, 6, 6))
    assert gap <= TOLERANCE
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("Dense") == 1
    affine = [layer for layer in model.layers if isinstance(layer, nn.Rescaling) and isinstance(layer.scale, tuple)]
    assert len(affine) == 1 and len(affine[0].offset) == 3  # x * scale + shift: one layer


@pytest.mark.parametrize("make, shape", [(lambda: tnn.Sequential(LinearLayer(4, 3)), (5, 4)),
                                         (MatmulNet, (3, 6)), (AffineCNN, (2, 2, 6, 6))],
                         ids=["linear_layer", "matmul", "affine_cnn"])
@pytest.mark.parametrize("decompose", [False, True], ids=["export", "decomposed"])
def test_own_parameter_math_converts_through_pt2(tmp_path, make, shape, decompose):
    _, gap = _export_gap(make(), torch.randn(*shape), tmp_path, decompose)
    assert gap <= TOLERANCE


class Positional(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc = tnn.Linear(4, 4)
        self.pos = tnn.Parameter(torch.randn(3, 4))

    def forward(self, x):
        return self.fc(x) + self.pos


def test_unconvertible_parameter_math_names_module_op_and_line():
    module = tnn.Sequential(tnn.Sequential(Positional()))
    with pytest.raises(ConversionError, match=r"module 0\.0 \(Positional\).*test_interop_torch_patterns\.py:\d+ "
                                              r"`return self\.fc\(x\) \+ self\.pos`.*one value per channel") as info:
        from_torch(module.eval(), torch.randn(3, 4))
    assert "\n" not in str(info.value)


class UsesLen(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc = tnn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).view(len(x), -1)


def test_len_in_forward_says_what_to_use_instead():
    with pytest.raises(ConversionError, match=r"len\(\).*use x\.size\(0\) / x\.shape\[0\]") as info:
        from_torch(UsesLen().eval(), torch.randn(2, 4))
    assert "_tensor_constant" not in str(info.value)


# -- recurrent tutorial patterns ----------------------------------------------------------------------------
class TimeFirst(tnn.Module):
    """batch_first=False after x.permute(1, 0, 2) / x.transpose(0, 1), zero initial states, out[-1] or h[-1]."""

    def __init__(self, cell="lstm", layers=2, take="out", swap="permute"):
        super().__init__()
        self.cell, self.layers, self.take, self.swap = cell, layers, take, swap
        self.rnn = {"lstm": tnn.LSTM, "gru": tnn.GRU, "rnn": tnn.RNN}[cell](4, 6, layers)
        self.fc = tnn.Linear(6, 3)

    def forward(self, x):
        x = x.permute(1, 0, 2) if self.swap == "permute" else x.transpose(0, 1)
        h0 = torch.zeros(self.layers, x.size(1), 6)
        if self.cell == "lstm":
            out, (h, _) = self.rnn(x, (h0, torch.zeros(self.layers, x.size(1), 6).to(x.device)))
        else:
            out, h = self.rnn(x, h0)
        return self.fc(out[-1] if self.take == "out" else h[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers, take, swap", [(1, "out", "permute"), (2, "h", "transpose"), (2, "out", "transpose")])
def test_time_first_recurrent_forwards_convert(cell, layers, take, swap):
    model, gap = _torch_gap(TimeFirst(cell, layers, take, swap), torch.randn(3, 7, 4))
    assert gap <= TOLERANCE
    recurrent = [layer for layer in model.layers if isinstance(layer, (nn.LSTM, nn.GRU, nn.SimpleRNN))]
    assert len(recurrent) == layers and not recurrent[-1].return_sequences


class SequenceClassifier(tnn.Module):
    """The seq-classifier tutorial: batch_first LSTM from zeros sized by x.size(0), out[:, -1, :] -> Linear."""

    def __init__(self):
        super().__init__()
        self.lstm = tnn.LSTM(5, 8, 2, batch_first=True, dropout=0.2)
        self.fc = tnn.Linear(8, 4)

    def forward(self, x):
        h0 = torch.zeros(2, x.size(0), 8)
        c0 = x.new_zeros(2, x.size(0), 8)
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :])


class CharRNN(tnn.Module):
    """The char-RNN tutorial shape: Embedding -> batch-first GRU -> Linear on the last step -> log_softmax."""

    def __init__(self):
        super().__init__()
        self.embed = tnn.Embedding(20, 6)
        self.gru = tnn.GRU(6, 8, batch_first=True)
        self.out = tnn.Linear(8, 20)

    def forward(self, tokens):
        out, _ = self.gru(self.embed(tokens))
        return F.log_softmax(self.out(out[:, -1]), dim=1)


class SentimentLSTM(tnn.Module):
    """The sentiment-LSTM tutorial shape: tokens (batch, time) -> .t() -> Embedding -> time-first LSTM ->
    hidden[-1] -> dropout -> Linear -> sigmoid."""

    def __init__(self):
        super().__init__()
        self.embedding = tnn.Embedding(30, 6)
        self.rnn = tnn.LSTM(6, 8, num_layers=2)
        self.dropout = tnn.Dropout(0.5)
        self.fc = tnn.Linear(8, 1)

    def forward(self, text):
        embedded = self.dropout(self.embedding(text.t()))
        _, (hidden, _) = self.rnn(embedded)
        return torch.sigmoid(self.fc(self.dropout(hidden[-1])))


@pytest.mark.parametrize("make, x", [
    (SequenceClassifier, lambda: torch.randn(3, 6, 5)),
    (CharRNN, lambda: torch.randint(0, 20, (3, 9))),
    (SentimentLSTM, lambda: torch.randint(0, 30, (4, 7))),
], ids=["seq_classifier", "char_rnn", "sentiment_lstm"])
def test_recurrent_tutorial_models_convert(make, x):
    _, gap = _torch_gap(make(), x())
    assert gap <= TOLERANCE


@pytest.mark.parametrize("make, x", [
    (lambda: TimeFirst("lstm", 2, "out"), lambda: torch.randn(3, 7, 4)),
    (lambda: TimeFirst("gru", 1, "h", "transpose"), lambda: torch.randn(3, 7, 4)),
    (lambda: TimeFirst("rnn", 2, "h"), lambda: torch.randn(3, 7, 4)),
    (SequenceClassifier, lambda: torch.randn(3, 6, 5)),
    (CharRNN, lambda: torch.randint(0, 20, (3, 9))),
    (SentimentLSTM, lambda: torch.randint(0, 30, (4, 7))),
], ids=["time_first_lstm", "time_first_gru", "time_first_rnn", "seq_classifier", "char_rnn", "sentiment_lstm"])
def test_recurrent_models_convert_through_pt2(tmp_path, make, x):
    _, gap = _export_gap(make(), x(), tmp_path)
    assert gap <= TOLERANCE


def test_decomposed_recurrent_program_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConversionError, match=r"unsupported ATen op") as info:
        _export_gap(SequenceClassifier(), torch.randn(3, 6, 5), tmp_path, decompose=True)
    assert "\n" not in str(info.value)


class RandomState(tnn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = tnn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        return self.rnn(x, torch.randn(1, x.size(0), 4))[0]


class ReturnsTimeFirst(tnn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = tnn.GRU(3, 4)

    def forward(self, x):
        return self.rnn(x.transpose(0, 1))[0]


@pytest.mark.parametrize("module, match", [
    (RandomState, "function randn"),
    (ReturnsTimeFirst, r"time-first .* batch-first"),
    (lambda: tnn.Sequential(tnn.GRU(3, 4)), r"batch_first=False.*x\.permute\(1, 0, 2\)"),
])
def test_recurrent_refusals_say_what_to_change(module, match):
    with pytest.raises(ConversionError, match=match) as info:
        from_torch(module().eval(), torch.randn(2, 5, 3))
    assert "\n" not in str(info.value)


# -- 1-D convolution and pooling ----------------------------------------------------------------------------
class TextCNN(tnn.Module):
    """Embedding -> permute(0, 2, 1) -> Conv1d / BatchNorm1d / pooling over (N, C, L) -> a Linear head."""

    def __init__(self, head="flatten"):
        super().__init__()
        self.head = head
        self.embed = tnn.Embedding(25, 6)
        self.conv1 = tnn.Conv1d(6, 8, 3, padding=1)
        self.norm = tnn.BatchNorm1d(8)
        self.pool = tnn.MaxPool1d(2)
        self.conv2 = tnn.Conv1d(8, 8, 4, padding="same", dilation=2, groups=2, bias=False)
        self.avg = tnn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
        self.kernel = tnn.Parameter(torch.randn(5, 8, 3) * 0.3)
        self.global_pool = tnn.AdaptiveMaxPool1d(1) if head == "global" else tnn.AdaptiveAvgPool1d(2)
        self.fc = tnn.Linear(5 if head == "global" else 10, 3)

    def forward(self, tokens):
        x = self.embed(tokens).permute(0, 2, 1)
        x = self.pool(F.relu(self.norm(self.conv1(x))))
        x = self.avg(F.relu(self.conv2(x)))
        x = F.conv1d(x, self.kernel, stride=1, padding=1)
        x = self.global_pool(x)
        x = x.squeeze(-1) if self.head == "global" else torch.flatten(x, 1)
        return self.fc(x)


@pytest.mark.parametrize("head", ["global", "flatten"])
def test_conv1d_batch_norm_and_pooling_on_sequences_convert(head):
    module = TextCNN(head)
    module.norm.running_mean.uniform_(-0.5, 0.5)
    module.norm.running_var.uniform_(0.5, 1.5)
    model, gap = _torch_gap(module, torch.randint(0, 25, (3, 12)))
    assert gap <= TOLERANCE
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 3 and kinds.count("BatchNorm") == 1


@pytest.mark.parametrize("decompose", [False, True], ids=["export", "decomposed"])
def test_conv1d_model_converts_through_pt2(tmp_path, decompose):
    module = TextCNN("flatten")
    _, gap = _export_gap(module, torch.randint(0, 25, (3, 12)), tmp_path, decompose)
    assert gap <= TOLERANCE


# -- bidirectional recurrences ------------------------------------------------------------------------------
class BiRecurrent(tnn.Module):
    """bidirectional=True, num_layers 1 or 2: final states concatenated, h[-1] alone, or the whole sequence."""

    def __init__(self, cell="lstm", layers=1, take="cat", batch_first=True):
        super().__init__()
        self.take, self.cell, self.batch_first = take, cell, batch_first
        self.rnn = {"lstm": tnn.LSTM, "gru": tnn.GRU, "rnn": tnn.RNN}[cell](
            4, 5, layers, batch_first=batch_first, bidirectional=True)
        self.fc = tnn.Linear(10 if take in ("cat", "sequence") else 5, 3)

    def forward(self, x):
        out, hidden = self.rnn(x if self.batch_first else x.transpose(0, 1))
        h = hidden[0] if self.cell == "lstm" else hidden
        if self.take == "cat":
            return self.fc(torch.cat((h[-2, :, :], h[-1, :, :]), dim=1))
        if self.take == "backward":
            return self.fc(h[-1])
        return self.fc(out)  # per step, (batch, time, 3)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers, take, batch_first", [(1, "cat", True), (2, "cat", False), (2, "backward", True),
                                                       (2, "sequence", True)])
def test_bidirectional_recurrences_convert(cell, layers, take, batch_first):
    model, gap = _torch_gap(BiRecurrent(cell, layers, take, batch_first), torch.randn(3, 6, 4))
    assert gap <= TOLERANCE
    assert sum(isinstance(node.layer, nn.Bidirectional) for node in model.nodes) == layers if isinstance(
        model, nn.Graph) else sum(isinstance(layer, nn.Bidirectional) for layer in model.layers) == layers


@pytest.mark.parametrize("layers, take", [(1, "cat"), (2, "backward"), (2, "sequence")])
def test_bidirectional_recurrences_convert_through_pt2(tmp_path, layers, take):
    _, gap = _export_gap(BiRecurrent("lstm", layers, take), torch.randn(3, 6, 4), tmp_path)
    assert gap <= TOLERANCE


class BiLastStep(tnn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = tnn.GRU(4, 5, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.rnn(x)[0][:, -1, :]


def test_bidirectional_last_step_is_refused_with_what_to_use():
    with pytest.raises(ConversionError, match=r"torch\.cat\(\(h_n\[-2\], h_n\[-1\]\), dim=1\)") as info:
        from_torch(BiLastStep().eval(), torch.randn(2, 5, 4))
    assert "\n" not in str(info.value)


class Signal1d(tnn.Module):
    """A 1-D CNN on raw (N, C, L) input (BatchNorm1d first), ending on an (N, C, L) output, like a denoiser."""

    def __init__(self):
        super().__init__()
        self.norm = tnn.BatchNorm1d(2)
        self.conv = tnn.Conv1d(2, 4, 5, padding=2)
        self.drop = tnn.Dropout1d(0.3)
        self.out = tnn.Conv1d(4, 3, 1)

    def forward(self, x):
        return self.out(self.drop(F.elu(self.conv(self.norm(x)))))


def test_raw_sequence_input_and_output_keep_torchs_layout(tmp_path):
    module = Signal1d()
    module.norm.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(3, 2, 10)
    model, gap = _torch_gap(module, x)
    assert gap <= TOLERANCE
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[0] == "Permute" and kinds[-1] == "Permute"
    _, gap = _export_gap(module, x, tmp_path)
    assert gap <= TOLERANCE


# -- resizing, padding anywhere, more activations -----------------------------------------------------------
class Decoder(tnn.Module):
    """Upsample (nearest, bilinear), F.interpolate, PixelShuffle, ZeroPad2d / F.pad not before a conv, and the
    activations torch models use."""

    def __init__(self, softsign=True):
        super().__init__()
        self.conv = tnn.Conv2d(3, 8, 3, padding=1)
        self.up = tnn.Upsample(scale_factor=2, mode="nearest")
        self.pad = tnn.ZeroPad2d((1, 0, 2, 1))
        self.acts = tnn.Sequential(tnn.ReLU6(), tnn.Hardswish(), tnn.SiLU(), tnn.Mish(), tnn.SELU(), tnn.ELU(0.7),
                                   tnn.Hardsigmoid(), tnn.Softsign() if softsign else tnn.Identity(), tnn.Identity(),
                                   tnn.Dropout2d(0.2))
        self.shuffle = tnn.PixelShuffle(2)
        self.bilinear = tnn.Upsample(size=(44, 66), mode="bilinear", align_corners=False)
        self.head = tnn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = self.pad(self.up(self.conv(x) * 3))
        x = self.shuffle(self.acts(x))
        y = F.interpolate(F.pad(x, (0, 0, 1, 1)), scale_factor=2, mode="bilinear")
        return self.head(self.bilinear(x)), y


def test_resizing_padding_and_activations_convert():
    module = Decoder()
    x = torch.randn(2, 3, 4, 5)
    module = module.eval()
    model, variables = from_torch(module, x)
    gaps = _gaps(model, variables, module, x)
    assert max(gaps) <= TOLERANCE, gaps
    kinds = {type(node.layer).__name__ for node in model.nodes}
    assert {"UpSampling2D", "ZeroPadding2D", "PixelShuffle", "Mish", "SELU", "HardSigmoid", "Softsign"} <= kinds


def test_resizing_padding_and_activations_convert_through_pt2(tmp_path):
    module = Decoder(softsign=False).eval()  # F.softsign exports as abs / add / div: not read
    x = torch.randn(2, 3, 4, 5)
    program = torch.export.export(module, (x,))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    model, variables, _ = from_exported(path)
    assert max(_gaps(model, variables, module, x)) <= TOLERANCE


@pytest.mark.parametrize("module, match", [
    (lambda: tnn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), "align_corners"),
    (lambda: tnn.Upsample(scale_factor=1.5), "integer"),
])
def test_unsupported_resizing_says_what_is_supported(module, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(tnn.Sequential(module()).eval(), torch.randn(1, 2, 4, 4))


# -- .pt2 programs with several inputs ----------------------------------------------------------------------
class TwoInputs(tnn.Module):
    """An image and a feature vector: scaled pixels, an adaptive max pool, a concatenation of both branches."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 4, 3, padding=1)
        self.pool = tnn.AdaptiveMaxPool2d(1)
        self.features = tnn.Linear(5, 6)
        self.head = tnn.Linear(4 + 6, 3)

    def forward(self, image, extra):
        x = torch.flatten(self.pool(F.relu(self.conv(image / 255 - 0.5))), 1)
        return self.head(torch.cat([x, torch.tanh(self.features(extra * 0.5 + 1))], dim=1))


def test_program_with_several_inputs_converts(tmp_path):
    module = TwoInputs().eval()
    image, extra = torch.rand(2, 3, 6, 6) * 255, torch.randn(2, 5)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(module, (image, extra)), str(path))
    model, variables, input_shape = from_exported(path)
    assert input_shape == ((6, 6, 3), (5,))
    assert isinstance(model, nn.Graph) and len(model.inputs) == 2
    with torch.no_grad():
        want = module(image, extra).numpy()
    got = model.apply(variables, (_funcdl_input(image), _funcdl_input(extra)))
    assert float(np.max(np.abs(np.asarray(got) - want))) <= TOLERANCE


class BiSlice(tnn.Module):
    """hidden[-2:] of a bidirectional GRU, batch-first and flattened: both final states."""

    def __init__(self):
        super().__init__()
        self.rnn = tnn.GRU(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = tnn.Linear(10, 2)

    def forward(self, x):
        _, hidden = self.rnn(x)
        both = hidden[-2:].permute(1, 0, 2).contiguous()
        return self.fc(both.reshape(x.size(0), -1))


def test_last_two_final_states_of_a_bidirectional_layer_convert(tmp_path):
    _, gap = _torch_gap(BiSlice(), torch.randn(3, 6, 4))
    assert gap <= TOLERANCE
    _, gap = _export_gap(BiSlice(), torch.randn(3, 6, 4), tmp_path)
    assert gap <= TOLERANCE
