"""Freezing layers for transfer learning: ``optax.multi_transform`` with the frozen parameters set to zero.

    optimizer = fd.optim.freeze(fd.optim.adam(1e-3), ["layers_1"])     # train everything but layers_1
    optimizer = fd.optim.freeze(fd.optim.adam(1e-3), trainable=["layers_3"])  # train layers_3 only

A frozen parameter gets a zero update and no optimizer state (no Adam moments
for it), so weight decay does not touch it either. BatchNorm statistics are
not parameters: they still follow the batches in training mode.
"""
from collections.abc import Callable, Sequence

import jax
import optax

from funcdl.errors import ConfigError

Selection = Sequence[str] | Callable[[str], bool]  # layer names / parameter paths, or path -> bool


def parameter_path(path: tuple) -> str:
    """``'layers_1/kernel'`` for a tree path into ``variables['params']``."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))
                    for entry in path)


def freeze(optimizer: optax.GradientTransformation, frozen: Selection = (), *,
           trainable: Selection | None = None) -> optax.GradientTransformation:
    """``optimizer`` for the trainable parameters; zero updates for the frozen ones.

    Args:
      optimizer: the GradientTransformation of the parameters that train.
      frozen: what not to train: layer names or parameter paths (``'layers_1'``, ``'layers_1/kernel'``: a name
        selects every parameter below it), or a function ``path -> bool``.
      trainable: instead of ``frozen``: what to train; everything else is frozen.
    Returns:
      An ``optax.multi_transform`` GradientTransformation, for ``fd.fit`` or ``TrainState.create``.
    Raises:
      ConfigError: both or neither of ``frozen`` and ``trainable``, or a name that selects no parameter.
    """
    if trainable is not None and frozen:
        raise ConfigError("freeze takes the frozen layers or the trainable ones, not both")
    if trainable is None and not frozen:
        raise ConfigError("freeze needs the layers to freeze (frozen=[...]) or to train (trainable=[...])")
    chosen, freeze_chosen = (frozen, True) if trainable is None else (trainable, False)

    def labels(params):
        paths = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
        selected = _selector(chosen, paths)
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if selected(parameter_path(path)) == freeze_chosen else "trained", params)
    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, labels)


def _selector(chosen: Selection, paths: list[str]) -> Callable[[str], bool]:
    """``path -> bool`` for names or paths (each must select a parameter), or the user's function as it is."""
    if callable(chosen):
        return chosen
    names = [chosen] if isinstance(chosen, str) else list(chosen)
    for name in names:
        if not any(path == name or path.startswith(f"{name}/") for path in paths):
            layers = sorted({path.split("/")[0] for path in paths})
            raise ConfigError(f"freeze: no parameter is called {name!r} or lies below it; the model's layers are: "
                              f"{', '.join(layers)}")
    return lambda path: any(path == name or path.startswith(f"{name}/") for name in names)
