"""Smoke tests of the benchmark scripts on tiny settings, and the reference's architecture."""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "throughput.py"

TOP_LEVEL = {
    "config", "environment", "throughput", "pipeline_first_batch_s", "keras_overhead",
    "peak_rss_mib_after_data", "peak_rss_mib_after_training", "peak_rss_mib",
    "saved_model_bytes", "tflite_bytes", "litert_latency", "wall_time_s",
}
# Everything but the inputs (config) and the machine description holds measured numbers.
MEASURED = TOP_LEVEL - {"config", "environment"}
PER_VARIANT = {
    "images_per_sec", "min_images_per_sec", "max_images_per_sec", "rounds_images_per_sec",
    "vs_fit_xla_off", "vs_reference",
}


def load_script(path=SCRIPT):
    # benchmarks/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # worker processes unpickle its functions by module name
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


@pytest.mark.slow  # 80-135 s: 4 models, 2 XLA compilations
def test_throughput_smoke(tmp_path, capsys):
    throughput = load_script()
    out = tmp_path / "bench.json"
    returned = throughput.main([
        "--preset", "dcgan_tiny", "--steps", "3", "--repeats", "1", "--batch-size", "16",
        "--warmup", "1", "--latency-runs", "3", "--reference-steps", "1",
        "--families", "vae", "--family-preset", "vae=vae_tiny", "--json", str(out),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert "| measurement | median |" in capsys.readouterr().out

    assert set(results) == TOP_LEVEL
    assert results["config"]["preset"] == "dcgan_tiny"
    assert results["config"]["families"] == {"vae": "vae_tiny"}
    assert set(results["throughput"]) == {
        *throughput.DCGAN_VARIANTS, "reference", "vae_fit_xla_off", "vae_fit_xla_on"}
    for variant in results["throughput"].values():
        assert set(variant) == PER_VARIANT
        assert len(variant["rounds_images_per_sec"]) == 1
    assert results["throughput"]["fit_xla_off"]["vs_fit_xla_off"] == 1.0
    assert results["throughput"]["reference"]["vs_reference"] == 1.0
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
        "--rounds", "2", "--warmup", "1", "--fd-num", "200", "--json", str(out),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    printed = capsys.readouterr().out
    assert "| model | mode |" in printed and "| FD change |" in printed
    assert set(results) == {"config", "environment", "fd_change", "families", "wall_time_s"}
    assert "FD" in results["fd_change"]

    assert set(results["families"]) == {"dcgan"}
    family = results["families"]["dcgan"]
    assert family["preset"] == "dcgan_tiny"
    modes = family["modes"]
    assert set(modes) == {m.value for m in litert_modes.Quantize}
    for mode in modes.values():
        assert set(mode) == LITERT_MODE_FIELDS | {"fd", "fd_change"}
        assert set(mode["quality"]) == {"max_abs_error", "mean_abs_error", "psnr_db"}
        assert set(mode["latency"]) == {"threads_1", "threads_2"}
        for latency in mode["latency"].values():
            assert set(latency) == {"median_ms", "p10_ms", "p90_ms", "ratio_vs_none"}
    assert modes["none"]["size_ratio_vs_none"] == 1.0
    assert modes["none"]["quality"]["max_abs_error"] <= 1e-4
    # float32 LiteRT makes the SavedModel's images: the same FD.
    assert abs(modes["none"]["fd_change"]) <= 1e-3 * family["fd_saved_model"]

    measured = dict(numbers(modes, "modes"))
    for key in ("saved_model_bytes", "reference_pixel_std"):
        measured[key] = family[key]
    measured["wall_time_s"] = results["wall_time_s"]
    # Errors may be exactly 0 (identical outputs); everything else must be > 0.
    # FD changes are signed (a quantized model may score slightly better).
    bad = {path: v for path, v in measured.items() if not path.endswith("fd_change")
           and (not math.isfinite(v) or v < 0 or (v == 0 and "_error" not in path))}
    assert not bad, f"negative, non-finite or zero measurements: {bad}"


def test_reference_matches_the_tutorial_parameter_count():
    """The TF DCGAN tutorial's model summaries, counted by hand from its layer list.

    Generator (no biases but the BN offsets):
        Dense 100 -> 7*7*256 = 12,544, no bias:      100 * 12,544 = 1,254,400
        BatchNorm(12,544): gamma, beta, mean, var:     4 * 12,544 =    50,176
        Conv2DTranspose 256 -> 128, 5x5, no bias:  5*5*256*128 =   819,200
        BatchNorm(128):                                  4 * 128 =       512
        Conv2DTranspose 128 -> 64, 5x5, no bias:    5*5*128*64 =   204,800
        BatchNorm(64):                                    4 * 64 =       256
        Conv2DTranspose 64 -> 1, 5x5, no bias:        5*5*64*1 =     1,600
        total 2,330,944, of which the BN moving statistics
        2 * (12,544 + 128 + 64) = 25,472 are not trainable: 2,305,472 trainable.
    Discriminator:
        Conv2D 1 -> 64, 5x5, with bias:           5*5*1*64 + 64 =     1,664
        Conv2D 64 -> 128, 5x5, with bias:      5*5*64*128 + 128 =   204,928
        Dense 7*7*128 = 6,272 -> 1, with bias:        6,272 + 1 =     6,273
        total 212,865, all trainable.
    """
    reference_dcgan = load_script(BENCHMARKS / "reference_dcgan.py")
    generator = reference_dcgan.make_generator()
    discriminator = reference_dcgan.make_discriminator()

    def trainable(model):
        return sum(int(v.shape.num_elements()) for v in model.trainable_variables)

    assert generator.count_params() == 2_330_944
    assert trainable(generator) == 2_305_472
    assert discriminator.count_params() == 212_865
    assert trainable(discriminator) == 212_865
    assert tuple(generator.output_shape) == (None, 28, 28, 1)
    assert tuple(discriminator.output_shape) == (None, 1)


def test_reference_trainer_one_step(fashion_test_arrays):
    """One tutorial step on real images: counters advance, finite losses, images in [0, 1]."""
    reference_dcgan = load_script(BENCHMARKS / "reference_dcgan.py")
    images, _ = fashion_test_arrays
    reference = reference_dcgan.Reference(images[:512], seed=0)
    before = [v.numpy().copy() for v in reference.generator.trainable_variables]
    result = reference.train(steps=1)
    assert result["steps"] == 1 and result["images"] == 256 and result["seconds"] > 0
    assert math.isfinite(result["gen_loss"]) and math.isfinite(result["disc_loss"])
    assert reference.steps == 1 and reference.epochs == 0.5
    after = reference.generator.trainable_variables
    moved = [(a.numpy() != b).any() for a, b in zip(after, before)]
    assert all(moved), "a generator weight did not move"
    generated = reference.generate(reference.sample_latents(4)).numpy()
    assert generated.shape == (4, 28, 28, 1)
    assert generated.min() >= 0.0 and generated.max() <= 1.0


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_time_to_quality_smoke(tmp_path, capsys):
    """benchmarks/time_to_quality.py: one reference step, dcgan_tiny, 1-s slices, 64-sample FDs."""
    time_to_quality = load_script(BENCHMARKS / "time_to_quality.py")
    out, png = tmp_path / "ttq.json", tmp_path / "plots" / "fd.png"
    returned = time_to_quality.main([
        "--models", "dcgan,reference", "--preset", "dcgan=dcgan_tiny",
        "--reference-epochs", str(1 / 235), "--slice-seconds", "1", "--num-samples", "64",
        "--json", str(out), "--plot", str(png),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert "| model | preset |" in capsys.readouterr().out
    assert set(results) == {"config", "environment", "complete", "target", "models", "points",
                            "eval_time_s", "wall_time_s"}
    assert results["complete"] is True
    assert results["config"]["models"] == ["reference", "dcgan"]
    assert results["config"]["presets"] == {"dcgan": "dcgan_tiny"}

    assert set(results["models"]) == {"reference", "dcgan"}
    for name, model in results["models"].items():
        assert set(model) == {
            "preset", "batch_size", "reached_target", "minutes_to_target", "epochs_to_target",
            "ratio_vs_reference", "training_minutes", "epochs", "images_per_sec", "best_fd",
            "evaluations",
        }
        assert model["evaluations"] >= 1, name
    reference = results["models"]["reference"]
    # The target is the reference's own last FD, so it reaches it, at most at its end.
    assert reference["reached_target"] and reference["ratio_vs_reference"] == 1.0
    assert reference["minutes_to_target"] <= reference["training_minutes"]
    assert results["target"]["reference_epochs"] == 256 / 60000  # one step of 256

    points = results["points"]
    assert {p["model"] for p in points} == {"reference", "dcgan"}
    for p in points:
        assert set(p) == {"model", "minutes", "epochs", "images", "fd"}
    for name in ("reference", "dcgan"):
        own = [p for p in points if p["model"] == name]
        assert [p["minutes"] for p in own] == sorted(p["minutes"] for p in own)
    measured = {f"points[{i}].{k}": p[k] for i, p in enumerate(points) for k in ("minutes", "fd")}
    measured["target.fd"] = results["target"]["fd"]
    measured.update({f"{n}.{k}": v for n, m in results["models"].items() for k, v in m.items()
                     if isinstance(v, float)})
    bad = {path: v for path, v in measured.items() if not (math.isfinite(v) and v > 0)}
    assert not bad, f"non-positive or non-finite measurements: {bad}"

    with png.open("rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert image.size[0] >= 400 and image.size[1] >= 300


def test_distribute_matrix_golden_criterion():
    import numpy as np

    golden = load_script(BENCHMARKS / "distribute_matrix.py").golden
    init = [np.zeros(4, "float32"), np.zeros(2, "float32"), np.array(0, "int64")]
    one = [np.full(4, 0.5, "float32"), np.ones(2, "float32"), np.array(3, "int64")]  # update norm sqrt(3)
    near = [one[0] + 5e-7, one[1], one[2]]
    far = [one[0] + np.float32([2e-2, 0, 0, 0]), one[1], np.array(7, "int64")]  # the integer is ignored
    assert golden(near, one, init, "float32")["ok"] and not golden(far, one, init, "float32")["ok"]
    result = golden(far, one, init, "mixed_float16")
    assert result["relative_update_diff"] == pytest.approx(2e-2 / np.sqrt(3.0), rel=1e-5)
    assert result["ok"] and result["weight_change"] == 1.0 and result["max_weight_diff"] == pytest.approx(2e-2, rel=1e-5)
    worse = [one[0] + np.float32([5e-2, 0, 0, 0]), one[1], one[2]]  # 2.9 % of the update
    assert not golden(worse, one, init, "mixed_float16")["ok"] and golden(worse, one, init, "mixed_bfloat16")["ok"]


@pytest.mark.slow  # ~2 min: 2 tiny VAEs, 2 XLA compilations, 4 evaluations
def test_vae_priors_smoke(tmp_path, capsys):
    vae_priors = load_script(BENCHMARKS / "vae_priors.py")
    out = tmp_path / "vae_priors.json"
    returned = vae_priors.main([
        "--preset", "vae_tiny", "--variants", "plain", "flow_lr2e-3_cool", "--long", "flow_lr2e-3_cool",
        "--minutes", "0.02", "0.04",
        "--slice-seconds", "1", "--num", "200", "--nll-images", "100", "--json", str(out),
        "--grids", str(tmp_path / "grids"), "--save-presets", str(tmp_path / "presets"),
    ])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert [(r["variant"], r["milestone"]) for r in results["rows"]] == [
        ("plain", 0.02), ("flow_lr2e-3_cool", 0.02), ("flow_lr2e-3_cool", 0.04)]
    # The variant's recipe override reached the optimizer; the preset's batch stayed.
    assert [r["learning_rate"] for r in results["rows"]] == pytest.approx([1e-3, 2e-3, 2e-3])
    # The cooldown spans the last fifth of the variant's last milestone: its rates had reached 0 there.
    assert results["rows"][0]["final_rate_factor"] == 1.0 and results["rows"][-1]["final_rate_factor"] == 0.0
    assert [r["batch_size"] for r in results["rows"]] == [128, 128, 128]
    for row in results["rows"]:
        assert row["minutes"] >= row["milestone"] and row["steps"] > 0
        assert set(row["likelihood"]) >= {"neg_elbo", "iwae_k100", "iwae_k1000"}
        # IWAE bounds tighten with k (same images; k=1000 averages more samples than k=100).
        assert row["likelihood"]["iwae_k1000"] <= row["likelihood"]["neg_elbo"] + 1.0
    assert "iwae_k100_flow_prior" in results["rows"][-1]["likelihood"]
    assert "| flow_lr2e-3_cool | " in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == [
        "flow_lr2e-3_cool-0.02min.png", "flow_lr2e-3_cool-0.04min.png", "plain-0.02min.png"]
    import zoo

    saved = zoo.from_preset(str(tmp_path / "presets" / "flow_lr2e-3_cool"))
    assert saved.prior_kind == "flow" and saved.get_config()["latent_dim"] == 8


@pytest.mark.slow  # ~1 min: 3 child processes
def test_data_loaders_smoke(tmp_path, capsys):
    loaders = load_script(BENCHMARKS / "data_loaders.py")
    args = ["--workdir", str(tmp_path), "--sizes", "40", "--rounds", "1", "--preset", "dcgan_tiny",
            "--batch-size", "8", "--batches", "2", "--train-steps", "1", "--shards", "2",
            "--json", str(tmp_path / "loaders.json")]
    results = loaders.main(args)
    measured = results["sizes"][40]["loaders"]
    assert set(measured) == set(loaders.LOADERS)
    for (rounds,) in measured.values():
        assert rounds["first_batch_s"] > 0 and rounds["train_img_s"] > 0
        assert rounds["peak_rss_mib"] >= rounds["peak_rss_mib_after_pipeline"] > 100
    assert "| 40 | folder |" in capsys.readouterr().out
    # A rerun resumes from rounds.jsonl: nothing is measured again.
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    again = loaders.main(args)
    assert (tmp_path / "rounds.jsonl").read_text().splitlines() == lines
    assert again["sizes"][40]["loaders"] == measured


def test_fashion_folder_writes_mixed_files(tmp_path):
    fashion_folder = load_script(BENCHMARKS / "fashion_folder.py")
    assert fashion_folder.write_folder(tmp_path, 6) == 6
    from PIL import Image

    files = sorted(tmp_path.rglob("*.*"))
    assert [f.suffix for f in files].count(".png") == 3 and [f.suffix for f in files].count(".jpg") == 3
    sizes = {Image.open(f).size for f in files}
    assert all(w == h and 180 <= w <= 300 for w, h in sizes) and len(sizes) > 1
    assert {f.parent.name for f in files} <= set(fashion_folder.CLASSES)


def test_ema_vs_raw_scores_both_generators_on_the_same_latents(tmp_path, capsys):
    import keras

    import zoo

    ema_vs_raw = load_script(BENCHMARKS / "ema_vs_raw.py")
    keras.utils.set_random_seed(0)
    model = zoo.get_model("stylegan2", "stylegan2_tiny")
    fresh = tmp_path / "fresh.keras"
    model.save(fresh)
    # A fresh model's EMA is a copy of its generator: identical scores.
    same = ema_vs_raw.main([str(fresh), "--num", "64", "--metrics", "fd", "--json", str(tmp_path / "same.json")])
    assert same["results"]["ema"] == same["results"]["raw"]
    assert json.loads((tmp_path / "same.json").read_text()) == json.loads(json.dumps(same))
    # Moving the raw generator's output layer apart makes the two score differently.
    last = model.generator.weights[-1]
    last.assign(last + 0.5)
    moved = tmp_path / "moved.keras"
    model.save(moved)
    out = ema_vs_raw.main([str(moved), "--num", "64", "--metrics", "fd"])
    assert out["results"]["ema"] == same["results"]["ema"]
    assert out["results"]["raw"]["fd"] != same["results"]["raw"]["fd"]
    assert "ema: fd" in capsys.readouterr().out
    dcgan = tmp_path / "dcgan.keras"
    zoo.get_model("dcgan", "dcgan_tiny").save(dcgan)
    with pytest.raises(SystemExit):
        ema_vs_raw.main([str(dcgan)])
    assert "is a DCGAN, not a StyleGAN2" in capsys.readouterr().err
