"""``python -m funcdl.cli``: the ``funcdl`` command."""
from funcdl.cli import entry

entry()
