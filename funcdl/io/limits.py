"""Limits on what funcdl unpacks from a file: archives, gzip streams and declared tensor sizes.

Every reader asks ``max_bytes()`` for the limit and calls ``check_size`` with the size a file *declares*
(zip members' sizes, an IDX header's dims, tensor metadata) before it allocates or decompresses anything,
so a decompression bomb or a lying header costs nothing.
"""
import os

from funcdl.errors import ConfigError, FileFormatError

MAX_BYTES_ENV = "FUNCDL_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: the most any one archive, gzip stream or declared tensor set may unpack to


def max_bytes(override: int | str | None = None) -> int:
    """The most bytes funcdl will unpack from one archive or gzip stream, or allocate for its declared tensors.

    Args:
      override: an explicit limit (a keyword of the reader, later a CLI flag); else ``$FUNCDL_MAX_BYTES``;
        else ``DEFAULT_MAX_BYTES``.
    Returns:
      the limit in bytes (a positive int).
    Raises:
      ConfigError if the override or the environment variable is not a positive integer.
    """
    source, value = ("max_bytes", override) if override is not None else (MAX_BYTES_ENV, os.environ.get(MAX_BYTES_ENV))
    if value is None or value == "":
        return DEFAULT_MAX_BYTES
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if isinstance(value, bool) or limit < 1:
        raise ConfigError(f"{source} must be a positive number of bytes, got {value!r}")
    return limit


def check_size(what: str, size: int, limit: int, error: type[Exception] | None = None) -> None:
    """Raise ``error`` (FileFormatError by default) if ``size`` bytes exceed ``limit``; before anything is allocated.

    Args:
      what: what would be unpacked or allocated, for the message (e.g. ``"x.pt2: its members"``).
      size: the declared size in bytes (a Python int, so huge declared shapes cannot overflow).
      limit: the limit in bytes (``max_bytes()``).
      error: the FuncdlError subclass to raise.
    """
    if size > limit:
        raise (error or FileFormatError)(
            f"{what} would unpack to {size:,} bytes, over the limit of {limit:,}; refused (a damaged file or a "
            f"decompression bomb; raise the limit with {MAX_BYTES_ENV}=BYTES only for a file you trust)")
