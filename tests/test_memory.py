"""Host memory of compiled programs (funcdl.train.memory): compile options, freed memory given back, bounded batches."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.train import make_eval, memory


def _mlp_eval_arguments(count=256):
    rng = np.random.default_rng(0)
    x = rng.random((count, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, count).astype(np.int32)
    model = fd.models.mlp(10)
    variables = model.init(jax.random.key(0), x[:1])
    return model, (variables, jnp.asarray(x), jnp.asarray(y))


def _loss(outputs, targets):
    return fd.losses.cross_entropy(outputs, targets)


def test_compile_lowered_computes_what_jit_computes():
    def f(x):
        return jnp.tanh(x @ x.T).sum(0)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((32, 16), dtype=np.float32))
    compiled = memory.compile_lowered(jax.jit(f).lower(x))
    np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(jax.jit(f)(x)), rtol=1e-6, atol=1e-6)


def test_cpu_options_are_for_large_programs_unless_xla_flags_set_them(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert memory.compiler_options(memory.LARGE_PROGRAM_OPS + 1) == memory.CPU_OPTIONS  # the tests run on the CPU
    assert memory.compiler_options(memory.LARGE_PROGRAM_OPS) is None  # small programs: XLA's defaults
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert memory.compiler_options(memory.LARGE_PROGRAM_OPS + 1) is None  # the user's flag wins


def test_a_large_program_compiles_with_the_cpu_options(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    passed = []
    real = jax.stages.Lowered.compile

    def spy(self, compiler_options=None):
        passed.append(compiler_options)
        return real(self, compiler_options=compiler_options)
    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    x = jnp.ones((4,))
    small = jax.jit(lambda x: x * 2).lower(x)
    large = jax.jit(lambda x: sum(jnp.sin(x + i) for i in range(memory.LARGE_PROGRAM_OPS))).lower(x)
    np.testing.assert_allclose(np.asarray(memory.compile_lowered(small)(x)), 2.0)
    memory.compile_lowered(large)
    assert passed == [None, memory.CPU_OPTIONS]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_freed_memory_can_be_given_back_on_linux():
    assert memory.release_free_memory() is True


def test_compile_within_halves_the_batch_until_its_buffers_fit():
    model, arguments = _mlp_eval_arguments()
    full, batch = memory.compile_within(lambda size: make_eval(model, _loss, size), 128, arguments, budget=2**40)
    assert batch == 128
    whole = full.memory_analysis().temp_size_in_bytes
    budget = whole // 3
    small, batch = memory.compile_within(lambda size: make_eval(model, _loss, size), 128, arguments, budget=budget)
    assert batch < 128 and small.memory_analysis().temp_size_in_bytes <= budget
    (loss_a, correct_a, predicted_a), (loss_b, correct_b, predicted_b) = full(*arguments), small(*arguments)
    assert float(correct_a) == float(correct_b)
    np.testing.assert_array_equal(np.asarray(predicted_a), np.asarray(predicted_b))
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)


def test_evaluate_gives_the_same_result_with_a_bounded_batch(monkeypatch):
    model, (variables, x, y) = _mlp_eval_arguments()
    data = (np.asarray(x), np.asarray(y))
    expected = fd.evaluate(model, variables, data, batch_size=256)
    monkeypatch.setattr(memory, "CPU_BUFFER_BYTES", 1)  # every batch is "too big": halved down to one example
    got = fd.evaluate(model, variables, data, batch_size=256)
    assert got["accuracy"] == expected["accuracy"]
    np.testing.assert_array_equal(got["confusion_matrix"], expected["confusion_matrix"])
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
