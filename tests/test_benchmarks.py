"""Smoke test of benchmarks/throughput.py on tiny settings (about 30 s of CPU)."""

import importlib.util
import json
import math
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"

TOP_LEVEL = {
    "config", "environment", "throughput", "pipeline_first_batch_s", "keras_overhead",
    "peak_rss_mib_after_data", "peak_rss_mib_after_training", "peak_rss_mib",
    "saved_model_bytes", "tflite_bytes", "litert_latency", "wall_time_s",
}
# Everything but the inputs (config) and the machine description holds measured numbers.
MEASURED = TOP_LEVEL - {"config", "environment"}
PER_VARIANT = {
    "images_per_sec", "min_images_per_sec", "max_images_per_sec", "rounds_images_per_sec",
    "vs_fit_xla_off",
}


def load_script():
    # benchmarks/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbers(tree, path):
    """`(path, value)` of every number in a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{path}[{i}]")
    else:
        assert isinstance(tree, (int, float)) and not isinstance(tree, bool), (path, tree)
        yield path, tree


def test_throughput_smoke(tmp_path, capsys):
    throughput = load_script()
    out = tmp_path / "bench.json"
    returned = throughput.main([
        "--preset", "dcgan_tiny", "--steps", "3", "--repeats", "1", "--batch-size", "16",
        "--warmup", "1", "--latency-runs", "3", "--json", str(out),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert "| measurement | median |" in capsys.readouterr().out

    assert set(results) == TOP_LEVEL
    assert results["config"]["preset"] == "dcgan_tiny"
    assert set(results["throughput"]) == set(throughput.VARIANTS)
    for variant in results["throughput"].values():
        assert set(variant) == PER_VARIANT
        assert len(variant["rounds_images_per_sec"]) == 1
    assert results["throughput"]["fit_xla_off"]["vs_fit_xla_off"] == 1.0
    assert set(results["keras_overhead"]) == {"xla_off", "xla_on"}
    assert set(results["litert_latency"]) == {"threads_1", "threads_2"}
    for latency in results["litert_latency"].values():
        assert set(latency) == {"median_ms", "p10_ms", "p90_ms"}

    measured = dict(kv for key in MEASURED for kv in numbers(results[key], key))
    bad = {path: v for path, v in measured.items() if not (math.isfinite(v) and v > 0)}
    assert not bad, f"non-positive or non-finite measurements: {bad}"


LITERT_SCRIPT = SCRIPT.parent / "litert_modes.py"
LITERT_MODE_FIELDS = {
    "tflite_bytes", "size_kib", "size_ratio_vs_none", "convert_s", "quality", "latency",
}


def test_litert_modes_smoke(tmp_path, capsys):
    """benchmarks/litert_modes.py on dcgan_tiny, 5 fit steps, 4 latency calls (about 25 s)."""
    spec = importlib.util.spec_from_file_location("litert_modes", LITERT_SCRIPT)
    litert_modes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(litert_modes)
    out = tmp_path / "modes.json"
    returned = litert_modes.main([
        "--families", "dcgan", "--presets", "dcgan_tiny", "--fit-steps", "5", "--runs", "4",
        "--rounds", "2", "--warmup", "1", "--json", str(out),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    printed = capsys.readouterr().out
    assert "| model | mode |" in printed and "FD change not measured" in printed
    assert set(results) == {"config", "environment", "fd_change", "families", "wall_time_s"}
    assert "FD" in results["fd_change"]

    assert set(results["families"]) == {"dcgan"}
    family = results["families"]["dcgan"]
    assert family["preset"] == "dcgan_tiny"
    modes = family["modes"]
    assert set(modes) == {m.value for m in litert_modes.Quantize}
    for mode in modes.values():
        assert set(mode) == LITERT_MODE_FIELDS
        assert set(mode["quality"]) == {"max_abs_error", "mean_abs_error", "psnr_db"}
        assert set(mode["latency"]) == {"threads_1", "threads_2"}
        for latency in mode["latency"].values():
            assert set(latency) == {"median_ms", "p10_ms", "p90_ms", "ratio_vs_none"}
    assert modes["none"]["size_ratio_vs_none"] == 1.0
    assert modes["none"]["quality"]["max_abs_error"] <= 1e-4

    measured = dict(numbers(modes, "modes"))
    for key in ("saved_model_bytes", "reference_pixel_std"):
        measured[key] = family[key]
    measured["wall_time_s"] = results["wall_time_s"]
    # Errors may be exactly 0 (identical outputs); everything else must be > 0.
    bad = {path: v for path, v in measured.items()
           if not math.isfinite(v) or v < 0 or (v == 0 and "_error" not in path)}
    assert not bad, f"negative, non-finite or zero measurements: {bad}"
