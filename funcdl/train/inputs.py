"""What ``fit`` accepts as data: arrays in memory, or batches streamed from a generator or a tf.data pipeline.

- numpy arrays ``x, y`` (or anything ``np.asarray`` reads: jax, torch CPU or TF tensors), an ``(x, y)``
  pair, a ``funcdl.data.ArrayDataset``: trained from device memory, one compiled program an epoch.
- a ``tf.data.Dataset`` or TFDS split of ``(x, y)`` or ``{'image', 'label'}`` elements, batched or not:
  converted to arrays when it holds at most ``IN_MEMORY_BYTES`` (then ``fit`` shuffles and batches it
  itself), else streamed (batches of ``batch_size`` when it is not batched). TensorFlow is never imported
  here: the dataset's own methods are called.
- any other iterable of ``(x, y)`` batches (a generator, a list, a torch ``DataLoader``): streamed, one
  compiled step per batch (see ``funcdl.train.stream``), for data that does not fit on the device.

Anything else is one DataError naming what was given and these choices.
"""
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from funcdl.data import ArrayDataset
from funcdl.errors import ConfigError, DataError

IN_MEMORY_BYTES = 2 << 30  # a tf.data pipeline holding more than this is streamed instead of converted
ACCEPTED = ("numpy arrays x and y, an (x, y) pair, a funcdl.data.ArrayDataset, a tf.data.Dataset or TFDS split, "
            "or an iterable of (x, y) batches (a generator, a list, a torch DataLoader)")


def is_tf_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``tf.data.Dataset`` (without importing TensorFlow)."""
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec") and hasattr(
        data, "as_numpy_iterator")


def as_pair(element: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays of one element or batch: an (x, y) pair or an ``{'image', 'label'}`` dict."""
    if isinstance(element, dict) and {"image", "label"} <= element.keys():
        element = (element["image"], element["label"])
    if isinstance(element, (tuple, list)) and len(element) == 3:
        raise DataError(f"{where} is an (x, y, sample_weight) triple; fit takes (x, y) pairs (no sample weights)")
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise DataError(f"{where} is a {type(element).__name__}; each batch must be an (x, y) pair "
                        "(or a dict with 'image' and 'label')")
    return np.asarray(element[0]), np.asarray(element[1])


class BatchSource:
    """Batches of ``(x, y)`` numpy arrays, epoch after epoch, from an iterable, an iterator or a tf.data pipeline.

    A re-iterable source (a list, a DataLoader, a dataset) starts again every epoch; a one-shot iterator
    (a generator) is read on, ``steps_per_epoch`` batches an epoch. Epochs end after ``steps_per_epoch``
    batches when given, else when the source is exhausted.

    Args:
      make_iterator: a fresh iterator over the batches.
      reiterable: whether ``make_iterator`` can be called again for the next epoch.
      length: batches in one pass, when known (``len(DataLoader)``, a dataset's cardinality).
      what: the data's name for messages.
    """

    def __init__(self, make_iterator: Callable[[], Iterator], reiterable: bool, length: int | None,
                 what: str = "training data"):
        self.make_iterator, self.reiterable, self.length, self.what = make_iterator, reiterable, length, what
        self.steps_per_epoch: int | None = None
        self._iterator: Iterator | None = None
        self._pending: Any = None

    def first(self) -> tuple[np.ndarray, np.ndarray]:
        """The first batch (kept for the first epoch when the source cannot be read twice)."""
        iterator = self.make_iterator()
        try:
            batch = next(iterator)
        except StopIteration:
            raise DataError(f"{self.what} yielded no batches") from None
        if not self.reiterable or self.steps_per_epoch is not None:
            self._iterator, self._pending = iterator, batch
        return as_pair(batch, f"batch 1 of {self.what}")

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The next epoch's batches as ``(x, y)`` numpy arrays."""
        stream = self._epoch_elements()
        for index, element in enumerate(stream):
            yield as_pair(element, f"batch {index + 1} of {self.what}")

    def _epoch_elements(self) -> Iterable:
        if self.steps_per_epoch is None:
            pending, self._pending = self._pending, None
            if pending is not None:
                return itertools.chain([pending], self._iterator or ())
            return self.make_iterator()
        return itertools.islice(self._continued(), self.steps_per_epoch)

    def _continued(self) -> Iterator:
        """One iterator read on across epochs, started again at its end when the source allows."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield pending
        while True:
            if self._iterator is None:
                self._iterator = self.make_iterator()
            # not `yield from`: closing this generator at an epoch's end must not close the user's iterator
            for element in self._iterator:  # noqa: UP028
                yield element
            self._iterator = None
            if not self.reiterable:
                return

    @property
    def steps(self) -> int | None:
        """Batches in one epoch, when known."""
        return self.steps_per_epoch if self.steps_per_epoch is not None else self.length


def _tf_batched(spec: Any) -> bool:
    """Whether a tf.data element spec describes batches (a leading batch axis) rather than single examples."""
    if isinstance(spec, dict):
        spec = (spec.get("image"), spec.get("label"))
    if not isinstance(spec, (tuple, list)) or len(spec) != 2 or spec[1] is None:
        return True  # as_pair says what is wrong with the elements
    x_shape, y_shape = spec[0].shape, spec[1].shape
    if y_shape.rank == 0:
        return False
    if y_shape[0] is None or (x_shape.rank and x_shape[0] is None):
        return True
    return bool(x_shape.rank) and x_shape[0] == y_shape[0]  # drop_remainder batches: both axes the batch size


def _tf_arrays(dataset: Any, batched: bool, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The whole dataset as ``(x, y)`` arrays, or None when it holds more than ``IN_MEMORY_BYTES``."""
    xs, ys, held = [], [], 0
    for index, element in enumerate((dataset if batched else dataset.batch(1024)).as_numpy_iterator()):
        x, y = as_pair(element, f"batch {index + 1} of the tf.data {what}")
        held += x.nbytes + y.nbytes
        if held > IN_MEMORY_BYTES:
            return None
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(f"the tf.data {what} is empty")
    return np.concatenate(xs), np.concatenate(ys)


def _from_tf(dataset: Any, batch_size: int | None, what: str) -> tuple[np.ndarray, np.ndarray] | BatchSource:
    batched = _tf_batched(dataset.element_spec)
    cardinality = int(dataset.cardinality())  # -1: infinite, -2: unknown
    if cardinality != -1:
        arrays = _tf_arrays(dataset, batched, what)
        if arrays is not None:
            return arrays
    batches = dataset if batched else dataset.batch(batch_size or 32)
    length = int(batches.cardinality())
    return BatchSource(batches.as_numpy_iterator, True, length if length >= 0 else None, f"the tf.data {what}")


def _from_iterable(data: Any, what: str) -> BatchSource:
    one_shot = iter(data) is data
    try:
        length = None if one_shot else len(data)
    except TypeError:
        length = None
    return BatchSource(lambda: iter(data), not one_shot, length, what)


def training_source(x: Any, y: Any = None, batch_size: int | None = None,
                    what: str = "training data") -> tuple[np.ndarray, np.ndarray] | BatchSource:
    """``(x, y)`` arrays, or a BatchSource to stream, from what ``fit`` was given (see the module).

    Raises:
      DataError: for anything else, naming what was given and the choices.
    """
    if y is not None:
        if is_tf_dataset(x) or (hasattr(x, "__next__") and not hasattr(x, "__array__")):
            raise DataError(f"{what}: y was given with a {type(x).__name__} of batches, which carries its own "
                            "targets; pass the batches alone")
        return np.asarray(x), np.asarray(y)
    if isinstance(x, ArrayDataset):
        return x.x, x.y
    if isinstance(x, (tuple, list)) and len(x) == 2 and not isinstance(x[0], (tuple, list, dict)):
        return np.asarray(x[0]), np.asarray(x[1])
    if is_tf_dataset(x):
        return _from_tf(x, batch_size, what)
    if isinstance(x, (str, bytes, dict, np.ndarray)) or not hasattr(x, "__iter__"):
        alone = " alone (y is missing)" if hasattr(x, "__array__") else ""
        raise DataError(f"{what} must be {ACCEPTED}; got {type(x).__name__}{alone}")
    return _from_iterable(x, what)


def split_last(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Keras's ``validation_split``: the last ``fraction`` of the examples, before any shuffling.

    Returns:
      (x_train, y_train, (x_validation, y_validation)).
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    split_at = math.floor(len(x) * (1.0 - fraction))  # as keras.src.trainers.data_adapters.array_slicing
    if split_at in (0, len(x)):
        raise DataError(f"validation_split {fraction} of {len(x)} examples leaves an empty split")
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])
