"""Golden tests: N replicas compute what one device computes."""

import pathlib

import numpy as np
import pytest

from helpers import last_json_line, run_python

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "golden_step.py"


def golden(family, preset, steps=2, batch=16):
    code = f"import runpy, sys; sys.argv = ['x', {family!r}, {preset!r}, '{steps}', '{batch}']; " \
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return last_json_line(run_python(code).stdout)


@pytest.mark.parametrize("family, preset", [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny")])
def test_mirrored_two_replicas_equal_one_device(family, preset):
    result = golden(family, preset)
    assert result["replicas"] == 2
    assert all(s == 2 for s in result["steps"])  # every held optimizer took both steps
    assert result["weight_change"] > 1e-4  # the steps did move the weights
    # Same global batch, same noise, global-batch losses and synced batch norm:
    # only float summation order differs.
    assert result["max_weight_diff"] < 1e-5, result
    for key, value in result["one"].items():
        np.testing.assert_allclose(result["two"][key], value, rtol=1e-5, err_msg=key)
