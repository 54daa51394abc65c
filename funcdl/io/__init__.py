"""Files: funcdl's model file, the atomic writer, and the registry of model-file formats (``funcdl.io.formats``)."""
from funcdl.io.atomic import atomic_path, check_writable, save_png, write_error
from funcdl.io.limits import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, check_size, max_bytes
from funcdl.io.model_file import flatten_variables, load_model, read_header, save_model, unflatten_variables

__all__ = ["DEFAULT_MAX_BYTES", "MAX_BYTES_ENV", "atomic_path", "check_size", "check_writable", "flatten_variables",
           "load_model", "max_bytes", "read_header", "save_model", "save_png", "unflatten_variables", "write_error"]
