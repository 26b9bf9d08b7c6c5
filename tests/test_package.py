"""The installed distribution: version, data files, where `zoo` comes from, console scripts."""

import json
import pathlib
import re
import subprocess
import sysconfig
import tomllib
from importlib import resources

import keras
import pytest

import export
import zoo
from conftest import REPO, installed_distribution

SCRIPTS = {"zoo-train": "zoo.cli.train:main", "zoo-export": "export.__main__:main",
           "zoo-evaluate": "zoo.evaluate:main", "zoo-generate": "zoo.generate:main"}


def _editable():
    direct_url = installed_distribution().read_text("direct_url.json")
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


def test_version_is_the_checkouts():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert zoo.__version__ == installed_distribution().version == declared  # else: reinstall (make setup)


def test_packages_come_from_the_installation_not_the_checkout_path():
    # An editable install maps the names to the checkout on purpose; a plain
    # `pip install .` must not be shadowed by the checkout on sys.path.
    if not _editable():
        installed = installed_distribution()
        for package in (zoo, export):
            expected = pathlib.Path(installed.locate_file(f"{package.__name__}/__init__.py")).resolve()
            assert pathlib.Path(package.__file__).resolve() == expected, "the checkout shadows the installed package"


def test_keras_outside_the_tested_range_is_refused_in_one_line():
    from zoo.keras_compat import KERAS_RANGE, check_keras_version

    # The range the private-method overrides check is the one pyproject.toml declares.
    declared = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                    if re.match(r"keras\b", d))
    (lo_major, lo_minor), (hi_major, hi_minor) = KERAS_RANGE
    assert declared == f"keras>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"
    for version in (keras.__version__, "3.15.0", "3.15.9rc1"):
        check_keras_version(version)
    for version in ("3.14.2", "3.16.0", "4.0.0", "unknown"):
        with pytest.raises(RuntimeError) as raised:
            check_keras_version(version)
        assert str(raised.value) == (f"zoo needs {declared} (its multi-worker fit overrides private Keras "
                                     f"trainer methods); found keras {version}")


def test_classifier_weights_are_installed_with_the_package():
    from zoo.metrics import classifier

    weights = resources.files("zoo.metrics") / "weights" / "fashion_mnist_classifier.weights.h5"
    assert weights.is_file() and weights.stat().st_size > 100_000
    assert pathlib.Path(classifier.WEIGHTS).resolve() == pathlib.Path(str(weights)).resolve()


def test_console_scripts():
    points = {ep.name: ep.value for ep in installed_distribution().entry_points
              if ep.group == "console_scripts"}
    assert points == SCRIPTS
    bin_dir = pathlib.Path(sysconfig.get_path("scripts"))
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    runs = {  # in parallel: each imports TensorFlow
        name: subprocess.Popen([str(bin_dir / name), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
        for name, args in [("zoo-train", ["--batch-size", "0"]), ("zoo-export", ["--help"]),
                           ("zoo-evaluate", ["--help"]), ("zoo-generate", ["--help"])]
    }
    done = {}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = proc.returncode, out, err
    code, _, err = done["zoo-train"]
    assert code == 2 and err.strip().splitlines()[-1] == "error: --batch-size must be a positive integer, got 0"
    for name in ("zoo-export", "zoo-evaluate", "zoo-generate"):
        code, out, err = done[name]
        assert code == 0 and "usage:" in out, err[-2000:]
