"""interop: move funcdl models to and from PyTorch and TensorFlow/Keras."""
