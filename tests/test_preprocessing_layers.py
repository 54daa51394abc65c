"""Rescaling and Normalization: fixed transforms with no parameters, per channel, serialisable."""
import numpy as np
import pytest
from layer_harness import run_layer_test

from funcdl import nn
from funcdl.errors import ConfigError, ShapeError


@pytest.mark.parametrize("layer", [nn.Rescaling(1 / 255), nn.Rescaling((1.0, 2.0, 0.5), offset=-1.0),
                                   nn.Normalization(mean=(0.5, 1.0, -1.0), variance=(4.0, 1.0, 0.0)),
                                   nn.Normalization(mean=2.0, variance=9.0, invert=True)])
def test_layer_harness(layer):
    run_layer_test(layer, (2, 4, 4, 3), (2, 4, 4, 3), expected_params={})


def test_values():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = nn.Rescaling((1.0, 2.0, 0.5), offset=-1.0).apply({}, x)
    np.testing.assert_array_equal(y, x * np.array([1, 2, 0.5], np.float32) - 1)
    norm = nn.Normalization(mean=(0.5, 1.0, -1.0), variance=(4.0, 1.0, 0.0))
    expected = (x - np.array([0.5, 1.0, -1.0], np.float32)) / np.array([2.0, 1.0, 1e-7], np.float32)
    np.testing.assert_allclose(norm.apply({}, x), expected, rtol=1e-6)
    back = nn.Normalization(mean=(0.5, 1.0, -1.0), variance=(4.0, 1.0, 1.0), invert=True).apply({}, x)
    np.testing.assert_allclose(back, x * np.array([2.0, 1.0, 1.0], np.float32) + [0.5, 1.0, -1.0], rtol=1e-6)
    with pytest.raises(ShapeError, match="2 mean values for 3 channels"):
        nn.Normalization(mean=(0.0, 1.0), variance=1.0).apply({}, x)


@pytest.mark.parametrize("config", [{"type": "Rescaling", "scale": "x"}, {"type": "Rescaling", "offset": [[1.0]]},
                                    {"type": "Normalization", "mean": [], "variance": 1.0},
                                    {"type": "Normalization", "mean": 0.0, "variance": -1.0},
                                    {"type": "Normalization", "epsilon": 0.0}])
def test_bad_configs_are_refused(config):
    with pytest.raises(ConfigError):
        nn.from_config(config)
    assert nn.from_config({"type": "Normalization", "mean": [1.0, 2.0], "variance": [1.0, 4.0]}).mean == (1.0, 2.0)
