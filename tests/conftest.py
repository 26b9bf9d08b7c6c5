"""Shared pytest setup: quiet TensorFlow, the installed package required, common fixtures.

The tests import `zoo` and `export` as installed (`make setup`, or `pip install -e .` /
`pip install .` into the environment that runs pytest), never from the checkout through
`sys.path`; pytest itself puts tests/ on `sys.path` for `helpers` and `conftest`. `REPO`
locates the checkout's own files (train.py, examples/, requirements.txt).
"""

import os
import pathlib
import sys
from importlib import metadata

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
DISTRIBUTION = "keras-generative-zoo"


def installed_distribution():
    """The installed `DISTRIBUTION` (not the `*.egg-info` a build leaves in the checkout), or None."""
    path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != REPO]
    return next(iter(metadata.distributions(name=DISTRIBUTION, path=path)), None)


def pytest_configure(config):
    if installed_distribution() is None:
        pytest.exit(f"{DISTRIBUTION} is not installed in {sys.prefix}: run `make setup` (or "
                    f"`pip install -e {REPO}`) and use that environment's python", returncode=4)


@pytest.fixture(scope="session")
def fashion_test_arrays():
    """The real Fashion-MNIST test split (uint8 [10000, 28, 28, 1], labels)."""
    from zoo import data

    return data.load_arrays("fashion_mnist:test")
