"""train.py: --dry-run over valid option combinations, clear errors for invalid ones."""

import itertools
import json
import subprocess
import sys

import pytest

import zoo
from conftest import REPO
from zoo import precision as zoo_precision
from zoo.cli import train


def dry_run(capsys, *args):
    code = train.main(["--dry-run", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


MODELS = [(f, p) for f, presets in zoo.list_presets().items() for p in presets]
JIT = ["--jit", "--no-jit"]
STRATEGIES = [("auto",), ("one",), ("mirrored",), ("mirrored", "--cpu-replicas", "2"), ("tpu",)]
# mixed_bfloat16 without a GPU: valid for a TPU, or on a CPU with bfloat16
# instructions (pretended below, whatever this machine has).
VALID = list(itertools.product(MODELS, STRATEGIES, ["float32", "mixed_float16", "mixed_bfloat16"], JIT))


@pytest.mark.parametrize("model, strategy, precision, jit", VALID)
def test_every_valid_combination_dry_runs(capsys, monkeypatch, model, strategy, precision, jit):
    monkeypatch.setattr(zoo_precision, "cpu_has_native_bfloat16", lambda: True)
    family, preset = model
    code, out, err = dry_run(
        capsys, "--model", family, "--preset", preset, "--strategy", strategy[0], *strategy[1:],
        "--precision", precision, jit, "--batch-size", 32, "--epochs", 2, "--steps", 5,
    )
    assert code == 0, err
    config = json.loads(out)
    assert (config["model"], config["preset"], config["precision"]) == (family, preset, precision)
    assert config["jit"] is (jit == "--jit") and config["strategy"] == strategy[0]


def test_multiworker_dry_run_with_tf_config(capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
        "task": {"type": "worker", "index": 0},
    }))
    assert dry_run(capsys, "--strategy", "multiworker")[0] == 0


def test_multiworker_rejects_uneven_batches_and_time_budgets(capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
        "task": {"type": "worker", "index": 0},
    }))
    code, _, err = dry_run(capsys, "--strategy", "multiworker", "--batch-size", 33)
    assert code == 2 and "does not split evenly over 2 replicas" in err
    code, _, err = dry_run(capsys, "--strategy", "multiworker", "--minutes", 5)
    assert code == 2 and "--minutes does not work with several workers" in err


def test_defaults_resolve_to_the_default_preset(capsys):
    code, out, _ = dry_run(capsys)
    config = json.loads(out)
    assert code == 0 and config["model"] == "dcgan" and config["preset"] == "dcgan_fashion_mnist"
    assert config["data"] == "fashion_mnist" and config["jit"] is zoo.DCGAN.xla_by_default()
    assert config["batch_size"] == 128


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt"], "--model 'gpt' is unknown"),
        (["--preset", "nope"], "--preset 'nope' is not a dcgan preset"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "-4"], "--batch-size must be a positive integer"),
        (["--steps", "-1"], "--steps must be a non-negative integer"),
        (["--strategy", "horovod"], "--strategy 'horovod' is unknown"),
        (["--precision", "float64"], "--precision 'float64' is unknown"),
        (["--quantize", "int4"], "--quantize 'int4' is unknown"),
        (["--cpu-replicas", "2"], "--cpu-replicas N (N >= 2) goes with --strategy mirrored"),
        (["--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "33"],
         "--batch-size 33 does not split evenly over 2 replicas"),
        (["--strategy", "multiworker"], "needs the TF_CONFIG environment variable"),
        (["--data", "folder:/no/such/dir"], "image folder /no/such/dir does not exist"),
        (["--data", "imagenet"], "unknown data scheme 'imagenet'"),
        (["--minutes", "-1"], "--minutes must be >= 0"),
        (["--precision", "mixed_bfloat16"],
         "--precision mixed_bfloat16 needs a GPU, a TPU or a CPU with bfloat16 instructions "
         "(avx512_bf16 or amx_bf16 in /proc/cpuinfo)"),
        (["--serving-base-path", ""], "--serving-base-path must be a non-empty path"),
    ],
)
def test_invalid_options_fail_with_one_line(capsys, monkeypatch, args, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    # A CPU without bfloat16 instructions, whatever this machine has.
    monkeypatch.setattr(zoo_precision, "cpu_has_native_bfloat16", lambda: False)
    code, out, err = dry_run(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_resume_needs_a_run_directory(capsys, tmp_path):
    code, _, err = dry_run(capsys, "--resume", tmp_path)
    assert code == 2 and "no config.json there" in err


def test_resume_refuses_to_change_the_model(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "dcgan", "preset": "dcgan_tiny"}))
    code, _, err = dry_run(capsys, "--resume", tmp_path, "--preset", "dcgan_64_rgb")
    assert code == 2 and "--preset cannot change on --resume" in err
    code, out, _ = dry_run(capsys, "--resume", tmp_path, "--epochs", 7)
    assert code == 0 and json.loads(out)["epochs"] == 7 and json.loads(out)["preset"] == "dcgan_tiny"


def test_deterministic_and_serving_base_path_are_in_the_config(capsys, tmp_path):
    code, out, _ = dry_run(capsys)
    config = json.loads(out)
    assert code == 0 and config["deterministic"] is False and config["serving_base_path"] == "/models"
    code, out, _ = dry_run(capsys, "--deterministic", "--serving-base-path", "gs://bucket/models")
    config = json.loads(out)
    assert code == 0 and config["deterministic"] is True and config["serving_base_path"] == "gs://bucket/models"
    # Determinism defines the run; where the server sees the export does not.
    (tmp_path / "config.json").write_text(json.dumps({"preset": "dcgan_tiny", "deterministic": True}))
    code, _, err = dry_run(capsys, "--resume", tmp_path, "--no-deterministic")
    assert code == 2 and "--deterministic cannot change on --resume" in err
    code, out, _ = dry_run(capsys, "--resume", tmp_path, "--serving-base-path", "/srv")
    assert code == 0 and json.loads(out)["serving_base_path"] == "/srv"
    (tmp_path / "config.json").write_text(json.dumps({"preset": "dcgan_tiny", "deterministic": "yes"}))
    code, _, err = dry_run(capsys, "--resume", tmp_path)
    assert code == 2 and err == "error: --deterministic is a flag (true or false), got 'yes'\n"


def test_real_process_exit_code_and_message():
    done = subprocess.run(
        # The checkout's train.py as a user runs it; -P: its folder is not on sys.path, so the
        # zoo it imports is the installed one.
        [sys.executable, "-P", str(REPO / "train.py"), "--batch-size", "0"],
        capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --batch-size must be a positive integer, got 0"


def test_list_presets(capsys):
    assert train.main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    for family, presets in zoo.list_presets().items():
        for name, description in presets.items():
            assert name in out and description in out
