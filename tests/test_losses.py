"""funcdl.losses against torch.nn.functional and keras.losses on fixed inputs."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses
from funcdl.errors import ConfigError, ShapeError

torch = pytest.importorskip("torch")
F = torch.nn.functional
keras = pytest.importorskip("keras")

# float32 on both sides: 1e-6 relative is a few ulps; the absolute floor only
# matters for losses that are (nearly) exactly 0.
RTOL, ATOL = 1e-6, 1e-7
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-8
B, C = 8, 5
WORST = {}
PER_TEST = {}


def assert_close(ours, ref, rtol=RTOL, atol=ATOL, tag="loss"):
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)
    rel = np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30))
    WORST[tag] = max(WORST.get(tag, 0.0), float(rel))
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    PER_TEST[test] = max(PER_TEST.get(test, 0.0), float(rel))


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    print("\nworst relative differences:", {k: f"{v:.2e}" for k, v in WORST.items()})
    for k, v in sorted(PER_TEST.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {v:.2e} {k}")


def rng():
    return np.random.default_rng(0)


def t(x):
    return torch.from_numpy(np.array(x))


def probs(r, shape):
    """Random probability rows (float32) that sum to 1 over the last axis."""
    x = r.random(shape).astype(np.float32) + 0.05
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def check_torch(ours_fn, torch_fn, args, reduce_none):
    """Per-example vector vs torch reduction='none' and batch mean vs torch default."""
    per_example = ours_fn(*args)
    assert per_example.shape == (args[0].shape[0],)
    assert_close(per_example, reduce_none(torch_fn(*map(t, args), reduction="none")))
    return per_example


def check_keras(per_example, keras_loss, y_true, y_pred):
    """Batch mean vs keras default reduction, per-example vs reduction=None."""
    assert_close(jnp.mean(per_example), keras_loss(y_true, y_pred))
    keras_loss.reduction = None
    elementwise = np.asarray(keras_loss(y_true, y_pred))
    assert_close(per_example, elementwise.reshape(len(elementwise), -1).mean(1))


def rowmean(x):
    x = x.detach().numpy()
    return x.reshape(len(x), -1).mean(1)


def rowsum(x):
    x = x.detach().numpy()
    return x.reshape(len(x), -1).sum(1)


# ---------------------------------------------------------------- regression


@pytest.mark.parametrize("shape", [(B,), (B, 3), (B, 3, 4)])
@pytest.mark.parametrize("name,torch_fn,keras_cls", [
    ("l1", F.l1_loss, keras.losses.MeanAbsoluteError),
    ("mse", F.mse_loss, keras.losses.MeanSquaredError),
])
def test_regression(name, torch_fn, keras_cls, shape):
    r = rng()
    p = r.normal(size=shape).astype(np.float32)
    y = r.normal(size=shape).astype(np.float32)
    fn = losses.get(name)
    per_example = check_torch(fn, torch_fn, (p, y), rowmean)
    assert_close(jnp.mean(per_example), torch_fn(t(p), t(y)))
    if len(shape) > 1:  # keras reduces the last axis only, so (B,) has no per-example form
        check_keras(per_example, keras_cls(), y, p)


@pytest.mark.parametrize("delta", [1.0, 0.5, 2.0])
def test_huber(delta):
    r = rng()
    p = (2 * r.normal(size=(B, 6))).astype(np.float32)
    y = r.normal(size=(B, 6)).astype(np.float32)
    per_example = check_torch(lambda a, b: losses.huber(a, b, delta=delta),
                              lambda a, b, **k: F.huber_loss(a, b, delta=delta, **k),
                              (p, y), rowmean)
    assert_close(jnp.mean(per_example), F.huber_loss(t(p), t(y), delta=delta))
    check_keras(per_example, keras.losses.Huber(delta=delta), y, p)


# ---------------------------------------------------- integer-label losses


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
def test_cross_entropy_torch(label_smoothing):
    r = rng()
    logits = (3 * r.normal(size=(B, C))).astype(np.float32)
    labels = r.integers(0, C, size=B)
    ours = losses.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    kw = dict(label_smoothing=label_smoothing)
    assert_close(ours, F.cross_entropy(t(logits), t(labels), reduction="none", **kw))
    assert_close(jnp.mean(ours), F.cross_entropy(t(logits), t(labels), **kw))


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("inner", [(), (3,)])
def test_sparse_categorical_crossentropy(from_logits, inner):
    r = rng()
    shape = (B,) + inner + (C,)
    if from_logits:
        pred = (3 * r.normal(size=shape)).astype(np.float32)
    else:
        pred = probs(r, shape)
    labels = r.integers(0, C, size=(B,) + inner).astype(np.int32)
    ours = losses.sparse_categorical_crossentropy(pred, labels, from_logits=from_logits)
    check_keras(ours, keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                labels, pred)
    if from_logits and not inner:
        assert_close(ours, F.cross_entropy(t(pred), t(labels).long(), reduction="none"))


def test_sparse_categorical_crossentropy_clipping():
    # Exact 0 and 1 probabilities, rows that do not sum to 1, and a trailing
    # label axis of size 1 (which keras squeezes).
    pred = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0.2, 0.3, 0.1],
                     [0.0, 0.5, 0.5], [1, 1, 0]], np.float32)
    labels = np.array([[0], [1], [2], [1], [0], [2]], np.int32)
    ours = losses.sparse_categorical_crossentropy(pred, labels)
    assert np.all(np.isfinite(ours))
    check_keras(ours, keras.losses.SparseCategoricalCrossentropy(), labels, pred)


# ---------------------------------------------------- one-hot-target losses


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("inner", [(), (3,)])
def test_categorical_crossentropy(from_logits, label_smoothing, inner):
    r = rng()
    shape = (B,) + inner + (C,)
    if from_logits:
        pred = (3 * r.normal(size=shape)).astype(np.float32)
    else:
        pred = probs(r, shape)
    onehot = np.eye(C, dtype=np.float32)[r.integers(0, C, size=(B,) + inner)]
    ours = losses.categorical_crossentropy(pred, onehot, from_logits=from_logits,
                                           label_smoothing=label_smoothing)
    check_keras(ours, keras.losses.CategoricalCrossentropy(
        from_logits=from_logits, label_smoothing=label_smoothing), onehot, pred)


def test_categorical_crossentropy_clipping():
    # Exact 0/1 probabilities, and unnormalised rows (keras divides by the sum).
    pred = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [2.0, 1.0, 1.0],
                     [0.0, 0.25, 0.25], [0.3, 0.3, 0.4]], np.float32)
    onehot = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0, 2]]
    for smoothing in (0.0, 0.1):
        ours = losses.categorical_crossentropy(pred, onehot, label_smoothing=smoothing)
        assert np.all(np.isfinite(ours))
        check_keras(ours, keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                    onehot, pred)


@pytest.mark.parametrize("inner", [(), (3,)])
def test_kl_divergence_keras(inner):
    r = rng()
    shape = (B,) + inner + (C,)
    pred, target = probs(r, shape), probs(r, shape)
    # Zeros and ones on both sides exercise keras' clipping to [1e-7, 1].
    target[0] = 0.0
    target[0, ..., 2] = 1.0
    pred[1] = 0.0
    pred[1, ..., 0] = 1.0
    target[2, ..., 1] = 0.0
    ours = losses.kl_divergence(pred, target)
    assert np.all(np.isfinite(ours))
    check_keras(ours, keras.losses.KLDivergence(), target, pred)
    assert_close(losses.get("kld")(pred, target), ours)


@pytest.mark.parametrize("inner", [(), (3,)])
def test_kl_divergence_torch(inner):
    r = rng()
    shape = (B,) + inner + (C,)
    log_pred = np.asarray(jax.nn.log_softmax(3 * r.normal(size=shape).astype(np.float32)))
    target = probs(r, shape)
    target[0] = 0.0
    target[0, ..., 3] = 1.0
    target[1, ..., 1] = 0.0  # zeros in the targets contribute 0
    ours = check_torch(lambda a, b: losses.kl_divergence(a, b, convention="torch"),
                       F.kl_div, (log_pred, target), rowsum)
    assert_close(jnp.mean(ours), F.kl_div(t(log_pred), t(target), reduction="batchmean"))
    assert_close(losses.get("kl_div")(log_pred, target), ours)


def test_kl_divergence_torch_neg_inf_where_target_is_zero():
    # A log-probability of -inf where the target is 0 contributes 0 (torch: nan).
    with np.errstate(divide="ignore"):
        log_pred = np.log(np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]], np.float32))
    target = np.array([[0.0, 0.4, 0.6], [0.1, 0.1, 0.8]], np.float32)
    ours = losses.kl_divergence(log_pred, target, convention="torch")
    finite = np.where(np.isinf(log_pred), 0.0, log_pred).astype(np.float32)
    assert_close(ours, rowsum(F.kl_div(t(finite), t(target), reduction="none")))
    grad = jax.jit(jax.grad(lambda x: losses.kl_divergence(x, target, convention="torch").sum()))(log_pred)
    assert np.all(np.isfinite(grad))


# ------------------------------------------------------------- binary losses


@pytest.mark.parametrize("inner", [(1,), (4,), (2, 3)])
def test_bce_with_logits(inner):
    r = rng()
    shape = (B,) + inner
    logits = (4 * r.normal(size=shape)).astype(np.float32)
    logits.flat[:4] = [30.0, -30.0, 0.0, 80.0]  # saturated logits stay finite
    targets = r.random(shape).astype(np.float32)  # soft targets
    targets.flat[4:8] = [0.0, 1.0, 1.0, 0.0]
    ours = check_torch(losses.binary_crossentropy_with_logits,
                       F.binary_cross_entropy_with_logits, (logits, targets), rowmean)
    assert_close(jnp.mean(ours), F.binary_cross_entropy_with_logits(t(logits), t(targets)))
    check_keras(ours, keras.losses.BinaryCrossentropy(from_logits=True), targets, logits)
    assert_close(losses.binary_crossentropy(logits, targets, from_logits=True), ours)


def bce_inputs():
    r = rng()
    p = r.random((B, 4)).astype(np.float32)
    y = (r.random((B, 4)) > 0.5).astype(np.float32)
    # Probabilities exactly 0 and 1, right and wrong.
    p[0], y[0] = [0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]
    p[1], y[1] = [1e-9, 1 - 1e-8, 0.5, 1e-30], [1.0, 0.0, 0.3, 0.0]
    return p, y


def test_binary_crossentropy_keras():
    p, y = bce_inputs()
    ours = losses.binary_crossentropy(p, y)
    assert np.all(np.isfinite(ours))
    check_keras(ours, keras.losses.BinaryCrossentropy(), y, p)


def test_binary_crossentropy_torch():
    p, y = bce_inputs()
    ours = check_torch(lambda a, b: losses.binary_crossentropy(a, b, convention="torch"),
                       F.binary_cross_entropy, (p, y), rowmean)
    assert_close(jnp.mean(ours), F.binary_cross_entropy(t(p), t(y)))
    # Exact 0/1 probabilities give -100 log terms (two wrong of four), no nan gradient.
    assert float(ours[0]) == pytest.approx(50.0, rel=1e-6)
    grad = jax.jit(jax.grad(lambda a: losses.binary_crossentropy(a, y, convention="torch").mean()))(p)
    assert np.all(np.isfinite(grad))
    assert_close(losses.get("BCELoss")(p, y), ours)


# ----------------------------------------------------------------- gradients


def torch_grad(fn, pred, target):
    x = t(pred).clone().requires_grad_(True)
    fn(x, t(target)).backward()
    return x.grad.numpy()


def test_gradients_match_torch():
    r = rng()
    logits = (3 * r.normal(size=(B, C))).astype(np.float32)
    labels = r.integers(0, C, size=B)
    soft = r.random((B, 3)).astype(np.float32)
    x = (2 * r.normal(size=(B, 3))).astype(np.float32)
    y = r.normal(size=(B, 3)).astype(np.float32)
    cases = [
        (lambda a: losses.cross_entropy(a, labels), F.cross_entropy, logits, labels),
        (lambda a: losses.cross_entropy(a, labels, label_smoothing=0.1),
         lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1), logits, labels),
        (lambda a: losses.bce_with_logits(a, soft), F.binary_cross_entropy_with_logits, x, soft),
        (lambda a: losses.huber(a, y), F.huber_loss, x, y),
        (lambda a: losses.huber(a, y, delta=0.5),
         lambda a, b: F.huber_loss(a, b, delta=0.5), x, y),
        (lambda a: losses.mse(a, y), F.mse_loss, x, y),
    ]
    for ours, theirs, pred, target in cases:
        g = jax.jit(jax.grad(lambda a, ours=ours: jnp.mean(ours(a))))(pred)
        assert_close(g, torch_grad(theirs, pred, target), GRAD_RTOL, GRAD_ATOL, tag="grad")


# ---------------------------------------------------------- jit, shapes, API


def all_cases():
    r = rng()
    logits = r.normal(size=(B, C)).astype(np.float32)
    labels = r.integers(0, C, size=B).astype(np.int32)
    pr = probs(r, (B, C))
    onehot = np.eye(C, dtype=np.float32)[labels]
    x, y = r.normal(size=(B, 3)).astype(np.float32), r.random((B, 3)).astype(np.float32)
    return [
        ("l1", x, y, {}), ("mse", x, y, {}), ("huber", x, y, {"delta": 0.5}),
        ("cross_entropy", logits, labels, {"label_smoothing": 0.1}),
        ("sparse_categorical_crossentropy", pr, labels, {}),
        ("sparse_categorical_crossentropy", logits, labels, {"from_logits": True}),
        ("categorical_crossentropy", pr, onehot, {"label_smoothing": 0.1}),
        ("categorical_crossentropy", logits, onehot, {"from_logits": True}),
        ("kl_divergence", pr, onehot, {}),
        ("kl_divergence", np.log(pr), onehot, {"convention": "torch"}),
        ("binary_crossentropy", y, (y > 0.5).astype(np.float32), {}),
        ("binary_crossentropy", y, (y > 0.5).astype(np.float32), {"convention": "torch"}),
        ("binary_crossentropy_with_logits", x, y, {}),
    ]


def test_every_canonical_loss_is_covered():
    assert {case[0] for case in all_cases()} == set(losses.NAMES)


@pytest.mark.parametrize("name,pred,target,options", all_cases(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_jit_matches_eager(name, pred, target, options):
    fn = losses.get(name)
    eager = fn(pred, target, **options)
    jitted = jax.jit(lambda p, y: fn(p, y, **options))(pred, target)
    assert eager.shape == (B,)
    assert np.all(np.isfinite(eager))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,pred,target", [
    ("cross_entropy", np.zeros((B, 2, C), np.float32), np.zeros((B, 2), np.int32)),
    ("cross_entropy", np.zeros((B,), np.float32), np.zeros((B,), np.int32)),
    ("cross_entropy", np.zeros((B, C), np.float32), np.zeros((B, 1), np.int32)),
    ("cross_entropy", np.zeros((B, C), np.float32), np.zeros((B + 1,), np.int32)),
    ("sparse_categorical_crossentropy", np.zeros((B, C), np.float32), np.zeros((B, 2), np.int32)),
    ("categorical_crossentropy", np.zeros((B, C), np.float32), np.zeros((B, C + 1), np.float32)),
    ("kl_divergence", np.zeros((B,), np.float32), np.zeros((B,), np.float32)),
    ("mse", np.zeros((B, 1), np.float32), np.zeros((B,), np.float32)),
    ("l1", np.zeros((B, 3), np.float32), np.zeros((B, 4), np.float32)),
    ("huber", np.zeros((B,), np.float32), np.zeros((B, B), np.float32)),
    ("binary_crossentropy", np.zeros((B, 1), np.float32), np.zeros((B,), np.float32)),
    ("binary_crossentropy_with_logits", np.zeros(()), np.zeros(())),
])
def test_shape_errors_name_the_loss(name, pred, target):
    fn = losses.get(name)
    for call in (fn, jax.jit(fn)):
        with pytest.raises(ShapeError, match=name) as info:
            call(pred, target)
        message = str(info.value)
        assert "\n" not in message and "expected" in message and "got" in message


def test_cross_entropy_rejects_float_labels():
    with pytest.raises(ShapeError, match="cross_entropy.*integer"):
        losses.cross_entropy(np.zeros((B, C), np.float32), np.zeros((B,), np.float32))


def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as info:
        losses.get("hinge")
    message = str(info.value)
    assert "'hinge'" in message
    for name in losses.NAMES:
        assert name in message


def test_unknown_convention():
    with pytest.raises(ConfigError, match="convention"):
        losses.kl_divergence(np.ones((B, C)), np.ones((B, C)), convention="tf")


@pytest.mark.parametrize("alias,canonical", [
    ("mae", "l1"), ("mean_absolute_error", "l1"), ("l1", "l1"), ("L1Loss", "l1"),
    ("mse", "mse"), ("mean_squared_error", "mse"), ("MeanSquaredError", "mse"),
    ("MSELoss", "mse"), ("huber", "huber"), ("HuberLoss", "huber"),
    ("cross_entropy", "cross_entropy"), ("CrossEntropyLoss", "cross_entropy"),
    ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
    ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
    ("categorical_crossentropy", "categorical_crossentropy"),
    ("binary_crossentropy", "binary_crossentropy"),
    ("bce_with_logits", "binary_crossentropy_with_logits"),
    ("BCEWithLogitsLoss", "binary_crossentropy_with_logits"),
    ("kl_divergence", "kl_divergence"), ("kld", "kl_divergence"),
    ("KLDivergence", "kl_divergence"),
])
def test_get_aliases(alias, canonical):
    assert losses.get(alias) is getattr(losses, canonical)


def test_get_torch_names_bind_torch_convention():
    for alias, canonical in [("kl_div", "kl_divergence"), ("KLDivLoss", "kl_divergence"),
                             ("binary_cross_entropy", "binary_crossentropy")]:
        fn = losses.get(alias)
        assert fn.func is getattr(losses, canonical)
        assert fn.keywords == {"convention": "torch"}


def test_get_returns_callables_as_is():
    def custom(p, y):
        return p - y
    assert losses.get(custom) is custom
    assert losses.get(losses.mse) is losses.mse


def test_label_kind():
    expected = {
        "cross_entropy": "integer", "sparse_categorical_crossentropy": "integer",
        "categorical_crossentropy": "one_hot", "kl_divergence": "one_hot",
        "l1": "dense", "mse": "dense", "huber": "dense",
        "binary_crossentropy": "dense", "binary_crossentropy_with_logits": "dense",
    }
    assert set(expected) == set(losses.NAMES)
    for name, kind in expected.items():
        assert losses.label_kind(name) == kind
        assert losses.label_kind(getattr(losses, name)) == kind
    assert losses.label_kind("kl_div") == "one_hot"
    assert losses.label_kind("SparseCategoricalCrossentropy") == "integer"
    assert losses.label_kind(lambda p, y: p) == "dense"
