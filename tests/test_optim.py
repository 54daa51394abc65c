"""funcdl.optim: exact agreement with torch.optim / keras.optimizers, jit, errors."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcdl import optim
from funcdl.errors import ConfigError

STEPS = 50
RTOL = 1e-5
LEARNING_RATES = {  # powers of two: keras stores the learning rate as float32
    "sgd": 2.0 ** -4, "momentum": 2.0 ** -4, "nesterov": 2.0 ** -4, "adagrad": 2.0 ** -3,
    "adadelta": 1.0, "rmsprop": 2.0 ** -7, "adam": 2.0 ** -7, "adamw": 2.0 ** -7}
BOTH = ("torch", "keras")
TORCH = ("torch",)

# keras casts some python-float hyper-parameters through float32 even for
# float64 variables (momentum, weight_decay, the betas inside its bias correction),
# which alone moves Adam by ~6e-6 relative with b2=0.999. So explicit values here
# are exact in float32, and the keras Adam cases use these betas.
BETAS = {"b1": 0.875, "b2": 1 - 2.0 ** -9}

# (case id, optimizer name, hyper-parameters, flavors). Large eps variants make
# the epsilon placement visible; the cases without eps check each framework's defaults.
CASES = [
    ("sgd", "sgd", {}, BOTH),
    ("sgd_weight_decay", "sgd", {"weight_decay": 0.0625}, BOTH),
    ("momentum", "momentum", {}, BOTH),
    ("momentum_weight_decay", "momentum", {"momentum": 0.75, "weight_decay": 0.0625}, BOTH),
    ("momentum_dampening", "sgd", {"momentum": 0.875, "dampening": 0.25}, TORCH),
    ("nesterov", "nesterov", {}, BOTH),
    ("nesterov_weight_decay", "nesterov", {"momentum": 0.75, "weight_decay": 0.0625}, BOTH),
    ("adagrad", "adagrad", {}, BOTH),
    ("adagrad_options", "adagrad",
     {"initial_accumulator_value": 0.0625, "eps": 2.0 ** -7, "weight_decay": 0.0625}, BOTH),
    ("adagrad_lr_decay", "adagrad", {"lr_decay": 0.125}, TORCH),
    ("adadelta", "adadelta", {}, BOTH),
    ("adadelta_options", "adadelta",
     {"rho": 0.75, "eps": 2.0 ** -10, "weight_decay": 0.0625}, BOTH),
    ("rmsprop", "rmsprop", {}, BOTH),
    ("rmsprop_eps", "rmsprop", {"eps": 2.0 ** -7}, BOTH),
    ("rmsprop_momentum", "rmsprop", {"momentum": 0.5, "eps": 2.0 ** -10}, BOTH),
    ("rmsprop_centered", "rmsprop", {"centered": True, "eps": 2.0 ** -10}, BOTH),
    ("rmsprop_all", "rmsprop",
     {"rho": 0.75, "centered": True, "momentum": 0.5, "weight_decay": 0.0625}, BOTH),
    ("adam", "adam", {}, TORCH),
    ("adam_betas", "adam", BETAS, BOTH),
    ("adam_eps", "adam", {"b1": 0.75, "b2": 0.984375, "eps": 2.0 ** -7}, BOTH),
    ("adam_weight_decay", "adam", {**BETAS, "weight_decay": 0.0625}, BOTH),
    ("amsgrad", "adam", {**BETAS, "amsgrad": True, "eps": 2.0 ** -10}, BOTH),
    ("adamw", "adamw", BETAS, BOTH),
    ("adamw_amsgrad", "adamw",
     {**BETAS, "weight_decay": 0.0625, "amsgrad": True, "eps": 2.0 ** -10}, BOTH),
]
FLAVORED = [pytest.param(name, kwargs, flavor, id=f"{case}-{flavor}")
            for case, name, kwargs, flavors in CASES for flavor in flavors]


# ----------------------------------------------------------------- the model

def _problem():
    """Fixed data and initial weights of an 8 -> 16 -> 3 tanh MLP (float64 numpy)."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(32, 8))
    targets = rng.normal(size=(32, 3))
    weights = {
        "hidden": {"kernel": rng.normal(size=(8, 16)) * 0.4, "bias": rng.normal(size=16) * 0.1},
        "out": {"kernel": rng.normal(size=(16, 3)) * 0.4, "bias": rng.normal(size=3) * 0.1}}
    return inputs, targets, weights


def _mlp_loss(params, inputs, targets):
    hidden = jnp.tanh(inputs @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    outputs = hidden @ params["out"]["kernel"] + params["out"]["bias"]
    return jnp.mean((outputs - targets) ** 2)


def _train(transformation, params, loss_fn, steps, use_jit=True):
    """Runs ``steps`` updates; returns (final params, loss before each step).

    ``loss_fn`` returns (loss, grads); it is shared between cases so that only the
    optimizer step is compiled per case.
    """
    def apply(grads, state, params):
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    apply = jax.jit(apply) if use_jit else apply
    state, losses = transformation.init(params), []
    for _ in range(steps):
        loss, grads = loss_fn(params)
        params, state = apply(grads, state, params)
        losses.append(loss)
    return params, np.asarray(losses)


_mlp_value_and_grad = jax.jit(jax.value_and_grad(_mlp_loss))


def _run_funcdl(name, kwargs, flavor, learning_rate=None):
    inputs, targets, weights = _problem()
    with jax.enable_x64(True):  # scoped: other test files keep float32 defaults
        params = jax.tree.map(jnp.asarray, weights)
        transformation = optim.get(name, learning_rate or LEARNING_RATES[name], flavor=flavor,
                                   **kwargs)
        # op by op: as exact as jit (test_converges_with_and_without_jit checks
        # that) and, without a compile per case, several times faster
        final, losses = _train(transformation, params,
                               lambda p: _mlp_value_and_grad(p, inputs, targets), STEPS,
                               use_jit=False)
        assert jax.tree.leaves(final)[0].dtype == jnp.float64
        return jax.tree.map(np.asarray, final), losses


def _assert_close(ours, reference, what):
    """max |ours - reference| / max |reference| <= RTOL, per parameter tensor.

    Scaled by the tensor's largest entry rather than element by element, so that
    an entry that happens to end near zero does not turn float32 rounding of the
    hyper-parameters inside keras into a failure.
    """
    relative = float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
    assert relative <= RTOL, f"{what}: relative difference {relative:.2e} > {RTOL}"
    return relative


def _assert_matches(ours, reference):
    final, losses = ours
    ref_final, ref_losses = reference
    _, _, initial = _problem()
    for path, value in jax.tree_util.tree_leaves_with_path(final):
        key = jax.tree_util.keystr(path)
        ref_value = ref_final[key]
        # the run must move every weight, or the comparison would prove nothing
        moved = np.max(np.abs(ref_value - _leaf(initial, path)))
        assert moved > 1e-4, f"{key} barely moved ({moved}); the test would be vacuous"
        _assert_close(value, ref_value, key)
    _assert_close(losses, ref_losses, "loss trajectory")
    assert ref_losses[-1] < ref_losses[0]


def _leaf(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


# ------------------------------------------------------------------ torch reference

def _torch_optimizer(torch, name, kwargs, parameters, learning_rate):
    classes = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
               "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
    options = dict(kwargs)
    if name in ("momentum", "nesterov"):
        options.setdefault("momentum", 0.9)
        options["nesterov"] = name == "nesterov"
    if name in ("adam", "adamw"):
        options["betas"] = (options.pop("b1", 0.9), options.pop("b2", 0.999))
    if name == "rmsprop" and "rho" in options:
        options["alpha"] = options.pop("rho")
    return getattr(torch.optim, classes[name])(parameters, lr=learning_rate, **options)


def _run_torch(name, kwargs, schedule=None):
    torch = pytest.importorskip("torch")
    inputs, targets, weights = _problem()

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterDict({
                f"{layer}_{kind}": torch.nn.Parameter(torch.tensor(value, dtype=torch.float64))
                for layer, group in weights.items() for kind, value in group.items()})

        def forward(self, x):
            hidden = torch.tanh(x @ self.weights["hidden_kernel"] + self.weights["hidden_bias"])
            return hidden @ self.weights["out_kernel"] + self.weights["out_bias"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on shared cores
    try:
        return _torch_steps(torch, MLP(), name, kwargs, schedule, inputs, targets)
    finally:
        torch.set_num_threads(threads)


def _torch_steps(torch, model, name, kwargs, schedule, inputs, targets):
    learning_rate = schedule(0) if schedule else LEARNING_RATES[name]
    optimizer = _torch_optimizer(torch, name, kwargs, model.parameters(), learning_rate)
    x, y, losses = torch.tensor(inputs), torch.tensor(targets), []
    for step in range(STEPS):
        if schedule:  # what a torch LR scheduler does: set the group's lr before the step
            optimizer.param_groups[0]["lr"] = schedule(step)
        optimizer.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = {"['{}']['{}']".format(*key.split("_")): value.detach().numpy()
             for key, value in model.weights.items()}
    return final, np.asarray(losses)


# ------------------------------------------------------------------ keras reference

def _keras():
    if "keras" not in sys.modules:  # the backend is fixed at the first import
        os.environ["KERAS_BACKEND"] = "tensorflow"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras was already imported with another backend")
    return keras, pytest.importorskip("tensorflow")


def _keras_optimizer(keras, name, kwargs, learning_rate):
    classes = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
               "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
    renames = {"eps": "epsilon", "b1": "beta_1", "b2": "beta_2"}
    options = {renames.get(key, key): value for key, value in kwargs.items()}
    if name in ("momentum", "nesterov"):
        options.setdefault("momentum", 0.9)
        options["nesterov"] = name == "nesterov"
    return getattr(keras.optimizers, classes[name])(learning_rate=learning_rate, **options)


def _run_keras(name, kwargs, schedule=None):
    keras, tf = _keras()
    inputs, targets, weights = _problem()
    variables = {f"['{layer}']['{kind}']": tf.Variable(value, dtype=tf.float64)
                 for layer, group in weights.items() for kind, value in group.items()}
    learning_rate = LEARNING_RATES[name]
    if schedule:
        class Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                return schedule(tf.cast(step, tf.float64))
        learning_rate = Schedule()
    optimizer = _keras_optimizer(keras, name, kwargs, learning_rate)
    optimizer.build(list(variables.values()))  # create its slots outside tf.function
    x, y, v = tf.constant(inputs), tf.constant(targets), variables

    @tf.function  # same ops as eager (checked bit-identical), three times faster
    def step():
        with tf.GradientTape() as tape:
            hidden = tf.tanh(x @ v["['hidden']['kernel']"] + v["['hidden']['bias']"])
            loss = tf.reduce_mean((hidden @ v["['out']['kernel']"] + v["['out']['bias']"] - y) ** 2)
        grads = tape.gradient(loss, list(v.values()))
        optimizer.apply_gradients(zip(grads, list(v.values())))
        return loss

    losses = [float(step()) for _ in range(STEPS)]
    return {key: value.numpy() for key, value in v.items()}, np.asarray(losses)


# ---------------------------------------------------------------------- tests

@pytest.mark.parametrize("name, kwargs, flavor", FLAVORED)
def test_matches_reference_framework(name, kwargs, flavor):
    """50 steps on an MLP track torch.optim / keras.optimizers within 1e-5 relative."""
    reference = _run_torch(name, kwargs) if flavor == "torch" else _run_keras(name, kwargs)
    _assert_matches(_run_funcdl(name, kwargs, flavor), reference)


SCHEDULED = [("momentum", {}), ("rmsprop", {"momentum": 0.5}),
             ("adam", {**BETAS, "weight_decay": 0.0625}), ("adagrad", {"weight_decay": 0.0625})]


@pytest.mark.parametrize("flavor", BOTH)
@pytest.mark.parametrize("name, kwargs", SCHEDULED, ids=[case[0] for case in SCHEDULED])
def test_schedule_matches_reference_framework(name, kwargs, flavor):
    """A decaying learning rate enters each framework's rule where that framework puts it."""
    base = LEARNING_RATES[name] * 2

    def schedule(step):
        return base * 0.95 ** step

    if flavor == "torch":
        reference = _run_torch(name, kwargs, schedule=schedule)
    else:
        reference = _run_keras(name, kwargs, schedule=schedule)
    _assert_matches(_run_funcdl(name, kwargs, flavor, learning_rate=schedule), reference)


def test_keras_momentum_folds_learning_rate_into_velocity():
    """Same result as torch for a constant lr, different once the lr changes."""
    def final(flavor, learning_rate):
        return _run_funcdl("momentum", {}, flavor, learning_rate=learning_rate)[0]

    constant = [final(flavor, 0.05) for flavor in BOTH]
    for a, b in zip(*map(jax.tree.leaves, constant)):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    decaying = [final(flavor, lambda step: 0.1 * 0.9 ** step) for flavor in BOTH]
    difference = max(float(np.max(np.abs(a - b)))
                     for a, b in zip(*map(jax.tree.leaves, decaying)))
    assert difference > 1e-3


def _regression_loss(params, inputs, targets):
    outputs = inputs @ params["linear"]["kernel"] + params["linear"]["bias"]
    return jnp.mean((outputs * params["scale"]["nested"]["value"] - targets) ** 2)


# under jax.disable_jit() this runs op by op
_regression_value_and_grad = jax.jit(jax.value_and_grad(_regression_loss))


def _regression_problem():
    """A tiny float32 regression with a nested parameter pytree."""
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(32, 4)).astype(np.float32)
    targets = inputs @ rng.normal(size=(4, 2)).astype(np.float32) + 0.5
    params = {"linear": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
              "scale": {"nested": {"value": jnp.ones(())}}}
    return params, lambda p: _regression_value_and_grad(p, inputs, targets)


@pytest.mark.parametrize("name, kwargs, flavor", FLAVORED)
def test_converges_with_and_without_jit(name, kwargs, flavor):
    """Loss decreases on a tiny float32 regression; jit and disable_jit agree."""
    params, loss_fn = _regression_problem()
    transformation = optim.get(name, LEARNING_RATES[name], flavor=flavor, **kwargs)
    jitted, jit_losses = _train(transformation, params, loss_fn, 6)
    with jax.disable_jit():
        eager, eager_losses = _train(transformation, params, loss_fn, 6, use_jit=False)
    for losses in (jit_losses, eager_losses):
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    np.testing.assert_allclose(jit_losses, eager_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("flavor", BOTH)
@pytest.mark.parametrize("name", ["adam", "adagrad", "rmsprop", "momentum"])
def test_float32_params_stay_float32_under_x64(name, flavor):
    """Counts and schedules evaluated in float64 must not promote float32 params."""
    with jax.enable_x64(True):
        params = {"a": {"w": jnp.ones((2, 3), jnp.float32)}}
        transformation = optim.get(name, lambda step: 0.1 * 0.9 ** step, flavor=flavor,
                                   weight_decay=0.1)
        updates, _ = jax.jit(transformation.update)(params, transformation.init(params), params)
        assert updates["a"]["w"].dtype == jnp.float32


INJECTED = [("adam", {}, "torch"), ("sgd", {"momentum": 0.9, "dampening": 0.25}, "torch"),
            ("adagrad", {"lr_decay": 0.1, "weight_decay": 0.1}, "torch"),
            ("rmsprop", {"momentum": 0.5, "centered": True}, "keras"),
            ("nesterov", {"weight_decay": 0.1}, "keras"), ("adamw", {"amsgrad": True}, "keras")]


@pytest.mark.parametrize("name, kwargs, flavor", INJECTED,
                         ids=[f"{case[0]}-{case[2]}" for case in INJECTED])
def test_inject_hyperparams_under_jit(name, kwargs, flavor):
    """optax.inject_hyperparams passes arrays (tracers under jit): same steps as floats."""
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.array([0.1, -0.2, 0.3])}
    injected = optax.inject_hyperparams(getattr(optim, name))(learning_rate=0.1, flavor=flavor,
                                                              **kwargs)
    plain = optim.get(name, 0.1, flavor=flavor, **kwargs)
    update = jax.jit(injected.update)
    state, plain_state = injected.init(params), plain.init(params)
    ours, reference = params, params
    for _ in range(3):
        updates, state = update(grads, state, ours)
        ours = optax.apply_updates(ours, updates)
        updates, plain_state = plain.update(grads, plain_state, reference)
        reference = optax.apply_updates(reference, updates)
    # hyper-parameters become float32 arrays instead of python floats: rounding only
    np.testing.assert_allclose(ours["w"], reference["w"], rtol=1e-5)


DEFAULTS = [("adam", "eps", 1e-8, 1e-7), ("adamw", "eps", 1e-8, 1e-7),
            ("adamw", "weight_decay", 0.01, 0.004), ("rmsprop", "rho", 0.99, 0.9),
            ("rmsprop", "eps", 1e-8, 1e-7), ("adagrad", "initial_accumulator_value", 0.0, 0.1),
            ("adagrad", "eps", 1e-10, 1e-7), ("adadelta", "rho", 0.9, 0.95),
            ("adadelta", "eps", 1e-6, 1e-7)]


@pytest.mark.parametrize("name, option, torch_default, keras_default", DEFAULTS,
                         ids=[f"{case[0]}-{case[1]}" for case in DEFAULTS])
def test_none_takes_the_framework_default(name, option, torch_default, keras_default):
    """``option=None`` acts exactly like the framework's default, not like the other's."""
    def first_update(flavor, value):
        with jax.enable_x64(True):
            params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 1e-5)}
            transformation = optim.get(name, 1.0, flavor=flavor, **{option: value})
            updates, _ = transformation.update(grads, transformation.init(params), params)
            return float(updates["w"][0])

    for flavor, own, other in (("torch", torch_default, keras_default),
                               ("keras", keras_default, torch_default)):
        assert first_update(flavor, None) == first_update(flavor, own)
        assert first_update(flavor, None) != first_update(flavor, other)


# ---------------------------------------------------------------------- errors

def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as error:
        optim.get("adamax", 0.1)
    message = str(error.value)
    assert "adamax" in message and all(name in message for name in optim.NAMES)
    assert optim.NAMES == ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop",
                           "adam", "adamw")
    assert isinstance(optim.get("ADAM", 0.1), optax.GradientTransformation)
    for name in (None, ["adam"], 3):
        with pytest.raises(ConfigError, match="choose one of"):
            optim.get(name, 0.1)


@pytest.mark.parametrize("call", [lambda: optim.get("adam", 0.1, flavor="jax"),
                                  lambda: optim.sgd(0.1, flavor="Torch"),
                                  lambda: optim.adamw(0.1, flavor=None)])
def test_unknown_flavor_lists_choices(call):
    with pytest.raises(ConfigError, match="torch") as error:
        call()
    assert "keras" in str(error.value) and optim.FLAVORS == ("torch", "keras")


BAD = [
    ("learning_rate zero", lambda: optim.sgd(0.0)),
    ("learning_rate negative", lambda: optim.adam(-1e-3)),
    ("learning_rate nan", lambda: optim.rmsprop(float("nan"))),
    ("learning_rate string", lambda: optim.adagrad("fast")),
    ("learning_rate bool", lambda: optim.adadelta(True)),
    ("momentum negative", lambda: optim.sgd(0.1, momentum=-0.1)),
    ("momentum too large", lambda: optim.rmsprop(0.1, momentum=1.5)),
    ("nesterov without momentum", lambda: optim.sgd(0.1, nesterov=True)),
    ("nesterov with dampening", lambda: optim.sgd(0.1, 0.9, nesterov=True, dampening=0.1)),
    ("keras dampening", lambda: optim.momentum(0.1, dampening=0.1, flavor="keras")),
    ("dampening too large", lambda: optim.momentum(0.1, dampening=2.0)),
    ("rho one", lambda: optim.rmsprop(0.1, rho=1.0)),
    ("rho negative", lambda: optim.adadelta(0.1, rho=-0.1)),
    ("b1 one", lambda: optim.adam(0.1, b1=1.0)),
    ("b2 above one", lambda: optim.adamw(0.1, b2=1.5)),
    ("eps negative", lambda: optim.adam(0.1, eps=-1e-8)),
    ("weight decay negative", lambda: optim.adamw(0.1, weight_decay=-0.01)),
    ("weight decay infinite", lambda: optim.sgd(0.1, weight_decay=float("inf"))),
    ("accumulator negative", lambda: optim.adagrad(0.1, initial_accumulator_value=-1.0)),
    ("keras lr_decay", lambda: optim.adagrad(0.1, lr_decay=0.1, flavor="keras")),
    ("unknown option", lambda: optim.get("adam", 0.1, momentum=0.9)),
    ("nesterov option of nesterov", lambda: optim.get("nesterov", 0.1, nesterov=False)),
]


@pytest.mark.parametrize("call", [case[1] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_hyper_parameters_raise_config_error(call):
    with pytest.raises(ConfigError) as error:
        call()
    message = str(error.value)
    assert message and "\n" not in message


def test_weight_decay_without_params_is_a_config_error():
    for flavor in BOTH:
        transformation = optim.adamw(0.1, flavor=flavor)
        params = {"w": jnp.ones(2)}
        with pytest.raises(ConfigError, match="params"):
            transformation.update(params, transformation.init(params))


def test_schedules_are_accepted_and_options_by_get():
    schedule = optax.exponential_decay(0.1, 10, 0.5)
    for name in optim.NAMES:
        for flavor in BOTH:
            transformation = optim.get(name, schedule, flavor=flavor)
            assert isinstance(transformation, optax.GradientTransformation)
    assert isinstance(optim.get("momentum", 0.1, momentum=0.5, weight_decay=0.1),
                      optax.GradientTransformation)


def test_freeze_zeroes_the_frozen_updates_and_keeps_no_state_for_them():
    params = {"layers_1": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}, "layers_3": {"kernel": jnp.ones((2, 2))}}
    grads = jax.tree.map(jnp.ones_like, params)
    for optimizer in (optim.freeze(optim.adam(0.1), ["layers_1/kernel"]),
                      optim.freeze(optim.adam(0.1), trainable=["layers_1/bias", "layers_3"]),
                      optim.freeze(optim.adam(0.1), lambda path: path.endswith("1/kernel"))):
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        assert not updates["layers_1"]["kernel"].any()
        np.testing.assert_allclose(updates["layers_3"]["kernel"], -0.1, rtol=1e-5)
        np.testing.assert_allclose(updates["layers_1"]["bias"], -0.1, rtol=1e-5)


@pytest.mark.parametrize("frozen, trainable, message", [
    (["layers_9"], None, "no parameter is called 'layers_9' or lies below it; the model's layers are: layers_1"),
    (["layers_1"], ["layers_1"], "not both"),
    ((), None, "needs the layers to freeze"),
])
def test_freeze_refuses_names_that_select_nothing(frozen, trainable, message):
    with pytest.raises(ConfigError, match=message):
        optim.freeze(optim.sgd(0.1), frozen, trainable=trainable).init({"layers_1": {"kernel": jnp.ones(2)}})
