"""Shared pytest setup: quiet TensorFlow, the repo on sys.path, common fixtures."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fashion_test_arrays():
    """The real Fashion-MNIST test split (uint8 [10000, 28, 28, 1], labels)."""
    from zoo import data

    return data.load_arrays("fashion_mnist:test")
