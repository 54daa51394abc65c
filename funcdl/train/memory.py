"""Host memory of compiled programs on the CPU: less of it used by the compiler, and what it frees given back.

XLA:CPU compiles a training epoch with LLVM, which allocates and frees hundreds of
megabytes of small objects. glibc keeps freed memory in its heaps instead of giving
it back to the system, so the process's resident memory stays at the compiler's
high-water mark, and the program's own buffers (allocated when it runs) come on
top of it. Measured on the bench's ResNet-8 epoch (batch 128): 455 MiB allocated
while compiling, 364 MiB of it still resident afterwards, plus 225 MiB of buffers
when it runs; with the freed heap given back (``malloc_trim``), the peak is the larger
of the two instead of their sum.

XLA:CPU's MLIR fusion emitters (``xla_cpu_use_fusion_emitters``, on by default in
jaxlib 0.10) take most of that compile memory, and more the larger the program.
With the LLVM IR emitters instead, compiling the bench's ResNet-8 epoch (4,766
StableHLO operations) allocated 64 MiB instead of 457, the CNN's (1,844) 38 instead
of 213; the epochs ran at 1.05x (ResNet, spread 0.77-1.18x) and 0.99x (CNN) the time
(medians of alternating rounds in one process on a shared 2-core CPU). On small
programs the MLIR emitters are the faster ones: the MLP's epoch (793 operations)
ran 1.8x slower without them. So only programs of more than ``LARGE_PROGRAM_OPS``
operations are compiled with ``CPU_OPTIONS``; results differ from the default
compile only in rounding (1e-7 on the ResNet's parameters after an epoch).

:func:`compile_lowered` compiles a large program with ``CPU_OPTIONS`` on the CPU
(unless ``XLA_FLAGS`` sets them already, or this jaxlib does not know them) and then
gives back what the compiler freed. :func:`compile_within` also halves an evaluation's batch while one
batch's buffers would pass ``CPU_BUFFER_BYTES``: inference on 1024 MNIST images
at once held 313 MiB of the CNN's activations, 256 images 78 MiB, at the same speed.
"""
import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import jax

CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
LARGE_PROGRAM_OPS = 1500  # StableHLO operations above which a program gets CPU_OPTIONS (the CNN: 1,844)
CPU_BUFFER_BYTES = 128 << 20  # an evaluation batch's temporary buffers on the CPU, at most (see compile_within)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release_free_memory() -> bool:
    """Give the memory freed inside the process's heaps back to the system (glibc's ``malloc_trim(0)``).

    Returns:
      whether anything could be asked for (False where the C library has no ``malloc_trim``).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def compiler_options(operations: int = LARGE_PROGRAM_OPS + 1) -> dict[str, Any] | None:
    """The options :func:`compile_lowered` passes for a program of ``operations`` StableHLO operations.

    ``CPU_OPTIONS`` (except those ``XLA_FLAGS`` sets) for a large program on the CPU, else None.
    """
    if jax.default_backend() != "cpu" or operations <= LARGE_PROGRAM_OPS:
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    return {name: value for name, value in CPU_OPTIONS.items() if name not in flags} or None


def compile_lowered(lowered: Any) -> Any:
    """``lowered.compile()`` (a ``jax.stages.Lowered``) with ``compiler_options()``, then freed memory given back."""
    options = compiler_options(lowered.as_text().count(" = "))  # one "%x = op" line an operation
    try:
        compiled = lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as err:
        if options is None or "No such compile option" not in str(err):
            raise
        compiled = lowered.compile()  # a jaxlib without these options: its defaults
    release_free_memory()
    return compiled


def compile_within(make: Callable[[int], Callable], batch: int, arguments: tuple,
                   budget: int | None = None) -> tuple[Any, int]:
    """``make(batch)`` jitted and compiled for ``arguments``, its batch halved while its buffers pass ``budget``.

    Only on the CPU (host memory): elsewhere ``make(batch)`` is compiled as it is.
    Args:
      make: ``batch -> function`` of ``arguments`` that works through its data ``batch`` examples at a time.
      batch: the largest batch to use.
      budget: bytes of temporary buffers allowed (default ``CPU_BUFFER_BYTES``).
    Returns:
      (compiled function, the batch it uses).
    """
    budget = CPU_BUFFER_BYTES if budget is None else budget
    while True:
        compiled = compile_lowered(jax.jit(make(batch)).lower(*arguments))
        if batch == 1 or jax.default_backend() != "cpu" or _temp_bytes(compiled) <= budget:
            return compiled, batch
        batch = max(1, batch // 2)


def _temp_bytes(compiled: Any) -> int:
    """The temporary buffers XLA assigned to ``compiled`` (0 when the backend does not say)."""
    analysis = compiled.memory_analysis()
    return 0 if analysis is None else int(analysis.temp_size_in_bytes)
