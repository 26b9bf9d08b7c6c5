"""The serving contract, tested without TF Serving (it cannot be installed here).

* Warmup records parse as `PredictionLog` and run against their signatures
  in a fresh process.
* The REST and gRPC example clients build requests that convert to the
  signatures' tensors and reproduce Keras; both also run end to end against
  stand-in servers on 127.0.0.1 that follow TF Serving's documented JSON and
  proto formats and call the SavedModel.
* Wrong input names or shapes give TF's own errors.
* The on-device script runs in a virtualenv without TensorFlow and matches
  Keras to one gray level.
"""

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

import zoo
from conftest import REPO
from export import Quantize, export_model, export_saved_model, write_tflite
from export import saved_model as saved_model_module
from export.warmup import WARMUP_FILE, warmup_logs, write_warmup
from helpers import run_python, trained_tiny_dcgan
from zoo import base

NAME = "dcgan_tiny"
EXAMPLES = REPO / "examples"
GRAY_LEVEL = 1 / 255


def _example(name):
    """Imports `examples/<name>.py` (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rest = _example("serving_rest_client")
grpc_client = _example("serving_grpc_client")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_test_arrays):
    """A tiny DC-GAN after 100 steps on Fashion-MNIST and its exports."""
    model = trained_tiny_dcgan(fashion_test_arrays)
    paths = export_model(model, tmp_path_factory.mktemp("export"), NAME)
    return model, paths


@pytest.fixture(scope="module")
def signatures(trained):
    return tf.saved_model.load(str(trained[1]["saved_model"])).signatures


@pytest.fixture(scope="module")
def signature_defs(trained):
    """`{name: SignatureDef}` as written in `saved_model.pb`, what the server reads."""
    saved = saved_model_pb2.SavedModel.FromString(
        (trained[1]["saved_model"] / "saved_model.pb").read_bytes()
    )
    defs = saved.meta_graphs[0].signature_def
    return {k: defs[k] for k in defs if not k.startswith("__")}  # not the init op


def _sample_images(model, num, seed):
    """What the `sample` signature computes, through Keras."""
    z = base.stateless_normal([num, *model.latent_shape], seed=[seed, 0])
    return model.generate(z).numpy()


def _expected_grid(images):
    """The examples' grid layout, written out independently of them."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    out = np.zeros((int(np.ceil(n / cols)) * h, cols * w, c))
    for i, image in enumerate(images):
        out[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = image
    return out[..., 0] if c == 1 else out


def _read_warmup(path):
    records = tf.data.TFRecordDataset(str(path))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]


def _assert_png_matches(path, images):
    pixels = np.asarray(Image.open(path), np.float64) / 255
    expected = _expected_grid(images)
    assert pixels.shape == expected.shape
    assert np.abs(pixels - expected).max() <= GRAY_LEVEL + 1e-9


# ---- warmup -------------------------------------------------------------------


def test_warmup_records_run_in_fresh_process(trained, tmp_path):
    model, paths = trained
    version = paths["saved_model"]
    warmup = version / "assets.extra" / WARMUP_FILE
    code = """
import sys, numpy as np, tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
version, warmup, out = sys.argv[1:]
signatures = tf.saved_model.load(version).signatures
arrays = {}
for i, record in enumerate(tf.data.TFRecordDataset(warmup)):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = signatures[request.model_spec.signature_name](**inputs)
    arrays.update({f"{i}/in/{k}": v for k, v in inputs.items()})
    arrays.update({f"{i}/out/{k}": v.numpy() for k, v in outputs.items()})
np.savez(out, **arrays)
"""
    run_python(code, args=(str(version), str(warmup), str(tmp_path / "out.npz")))
    out = np.load(tmp_path / "out.npz")

    logs = _read_warmup(warmup)
    endpoints = model.export_endpoints()
    assert len(logs) == 2 * len(endpoints)
    seen = {}
    for i, log in enumerate(logs):
        request = log.predict_log.request
        assert request.model_spec.name == NAME
        signature = request.model_spec.signature_name
        specs = {s.name: s for s in endpoints[signature][1]}
        assert set(request.inputs) == set(specs)
        for key, proto in request.inputs.items():
            assert proto.dtype == specs[key].dtype.as_datatype_enum
        if signature == "serving_default":
            z = out[f"{i}/in/z"]
            batch = len(z)
            expected = model.generate(z).numpy()
        else:
            batch = int(out[f"{i}/in/num"])
            expected = _sample_images(model, batch, int(out[f"{i}/in/seed"]))
        np.testing.assert_allclose(out[f"{i}/out/images"], expected, atol=1e-5)
        seen.setdefault(signature, set()).add(batch)
    assert seen == {name: {1, 2} for name in endpoints}  # every signature, both batch sizes


def test_warmup_is_in_place_before_the_version_appears(trained, tmp_path, monkeypatch):
    model, _ = trained
    rename = os.rename
    checked = []

    def checking_rename(src, dst):
        checked.append((src / "assets.extra" / WARMUP_FILE).is_file())
        rename(src, dst)

    monkeypatch.setattr(saved_model_module.os, "rename", checking_rename)
    version = export_saved_model(model, tmp_path, "gan")
    assert checked == [True]
    logs = _read_warmup(version / "assets.extra" / WARMUP_FILE)
    assert {log.predict_log.request.model_spec.name for log in logs} == {"gan"}


@pytest.mark.parametrize("family", sorted(zoo.FAMILIES))
def test_warmup_rules_cover_every_family(family):
    presets = zoo.FAMILIES[family].presets
    model = zoo.get_model(family, next((p for p in presets if p.endswith("_tiny")), next(iter(presets))))
    endpoints = model.export_endpoints()
    logs = warmup_logs(model, family, requests_per_signature=3)
    assert len(logs) == 3 * len(endpoints)
    for log in logs:
        request = log.predict_log.request
        fn, specs = endpoints[request.model_spec.signature_name]
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        for spec in specs:
            assert tf.TensorSpec.from_tensor(tf.constant(inputs[spec.name])).is_subtype_of(
                tf.TensorSpec(spec.shape, spec.dtype)
            )
        for value in fn(**inputs).values():
            assert np.isfinite(value.numpy()).all()


def test_warmup_errors(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="TF Serving reads 1 to 1000 warmup records"):
        write_warmup(model, tmp_path, requests_per_signature=501)

    class Captioner:  # a family with an input kind the rules do not know
        latent_shape = (4,)

        def export_endpoints(self):
            return {"caption": (None, [tf.TensorSpec([None], tf.string, name="text")])}

    with pytest.raises(ValueError, match=r"no warmup input rule for 'caption' input 'text'"):
        write_warmup(Captioner(), tmp_path)
    assert not (tmp_path / "assets.extra" / WARMUP_FILE).exists()


# ---- REST -------------------------------------------------------------------


def _metadata_response(signature_defs):
    """The `GetModelMetadataResponse` TF Serving sends for the model."""
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_pb2.ModelSpec(name=NAME))
    response.model_spec.version.value = 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def _metadata_json(signature_defs):
    # TF Serving prints proto field names and default values.
    return json_format.MessageToDict(
        _metadata_response(signature_defs),
        preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
    )


def tensors_from_body(body, signature_def):
    """A `:predict` JSON body -> `{name: np.ndarray}` of the signature's dtypes.

    TF Serving's rules: `instances` is a list of examples (objects keyed by
    input name, or bare values for a single input) stacked on a new batch
    axis; `inputs` is one value per input (or a bare value for a single
    input). Unknown names go through as float32, for TF to reject.
    """
    dtypes = {k: tf.dtypes.as_dtype(v.dtype).as_numpy_dtype for k, v in signature_def.inputs.items()}

    def named(values):
        if isinstance(values, dict):
            return values
        (name,) = dtypes
        return {name: values}

    if "instances" in body:
        rows = body["instances"]
        columns = [named(row) for row in rows]
        values = {k: [row[k] for row in columns] for k in columns[0]}
    else:
        values = named(body["inputs"])
    return {k: np.asarray(v, dtypes.get(k, np.float32)) for k, v in values.items()}


def _response_json(outputs, columnar):
    """Outputs -> TF Serving's response; a single output is not named."""
    outputs = {k: v.numpy().tolist() for k, v in outputs.items()}
    if columnar:
        return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(rows)]}


@pytest.fixture(scope="module")
def rest_server(signatures, signature_defs):
    """A stand-in for TF Serving's REST API on 127.0.0.1: `(host, port)`."""
    metadata = _metadata_json(signature_defs)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == f"/v1/models/{NAME}/metadata":
                self._send(200, metadata)
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            if self.path != f"/v1/models/{NAME}:predict":
                return self._send(404, {"error": f"no route {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = body.get("signature_name", "serving_default")
            try:
                outputs = signatures[name](**tensors_from_body(body, signature_defs[name]))
            except (TypeError, ValueError, tf.errors.OpError) as e:
                return self._send(400, {"error": str(e)})
            self._send(200, _response_json(outputs, columnar="inputs" in body))

        def log_message(self, *args):  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("signature, columnar", [
    ("serving_default", False), ("serving_default", True), ("sample", True),
])
def test_rest_body_converts_to_signature_tensors(trained, signatures, signature_defs, signature, columnar):
    model, _ = trained
    specs = rest.signature_inputs(_metadata_json(signature_defs), signature)
    body = rest.build_body(signature, rest.make_inputs(specs, 3, 7), columnar=columnar)
    body = json.loads(json.dumps(body))  # what goes over the wire
    assert body["signature_name"] == signature
    assert ("inputs" if columnar else "instances") in body
    tensors = tensors_from_body(body, signature_defs[signature])
    images = signatures[signature](**tensors)["images"].numpy()
    if signature == "sample":
        assert specs == {"num": ("DT_INT32", []), "seed": ("DT_INT64", [])}
        assert tensors["num"].dtype == np.int32 and tensors["seed"].dtype == np.int64
        expected = _sample_images(model, 3, 7)
    else:
        assert specs == {"z": ("DT_FLOAT", [-1, 16])}
        assert tensors["z"].shape == (3, 16) and tensors["z"].dtype == np.float32
        expected = model.generate(tensors["z"]).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_rest_rows_need_a_batch_dimension():
    with pytest.raises(ValueError, match=r"inputs \['num', 'seed'\] have no batch dimension"):
        rest.build_body("sample", {"num": 4, "seed": 7})


def _run_rest_client(address, *args, stdlib_only=False):
    host, port = address
    # -I -S: no site-packages and no PYTHONPATH, so only the standard library.
    flags = ["-I", "-S"] if stdlib_only else ["-I"]
    return subprocess.run(
        [sys.executable, *flags, str(EXAMPLES / "serving_rest_client.py"),
         "--host", host, "--port", str(port), "--model", NAME, *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )


def test_rest_client_end_to_end(trained, rest_server, signature_defs, tmp_path):
    model, _ = trained
    done = _run_rest_client(rest_server, "--signature", "serving_default", "--num", 5, "--seed", 3,
                            "--out", tmp_path / "rows.png")
    assert done.returncode == 0, done.stderr
    specs = rest.signature_inputs(_metadata_json(signature_defs), "serving_default")
    z = np.asarray(rest.make_inputs(specs, 5, 3)["z"], np.float32)
    _assert_png_matches(tmp_path / "rows.png", model.generate(z).numpy())

    # Without Pillow (or numpy) the client writes float32 .npy.
    done = _run_rest_client(rest_server, "--signature", "sample", "--num", 4, "--seed", 9, "--columnar",
                            "--out", tmp_path / "sample.png", stdlib_only=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "sample.npy")
    np.testing.assert_allclose(np.load(tmp_path / "sample.npy"), _sample_images(model, 4, 9), atol=1e-5)


def test_rest_server_errors_reach_the_client(rest_server):
    bad = {"signature_name": "serving_default", "instances": [{"z": [0.0] * 15}]}
    with pytest.raises(RuntimeError, match=r"HTTP 400: .*name='z'"):
        rest.predict(*rest_server, NAME, bad)


# ---- TF's own errors -------------------------------------------------------------


def test_wrong_input_names_and_shapes_give_tf_errors(signatures):
    default, sample = signatures["serving_default"], signatures["sample"]
    z = np.zeros((2, 16), np.float32)
    with pytest.raises(TypeError, match=r"missing a required argument: 'z'") as e:
        default(latents=z)
    assert "latents" in str(e.value)
    # Arrays (what a JSON body becomes) are checked against the signature's spec.
    with pytest.raises(TypeError, match=r"TensorSpec\(shape=\(2, 15\), dtype=tf.float32, name='z'\)"):
        default(z=z[:, :15])
    # A scalar sent in the `instances` format arrives with a batch axis.
    with pytest.raises(TypeError, match=r"TensorSpec\(shape=\(1,\), dtype=tf.int32, name='num'\)"):
        sample(num=np.array([4], np.int32), seed=np.array(7, np.int64))
    # Tensors skip that check, as TF Serving does (it never checks shapes): the graph fails.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Matrix size-incompatible: In\[0\]: \[2,15\]"):
        default(z=tf.constant(z[:, :15]))


# ---- gRPC -------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["serving_default", "sample"])
def test_grpc_request_contract(trained, signatures, signature_defs, signature):
    model, _ = trained
    signature_def = signature_defs[signature]
    request = grpc_client.build_request(NAME, signature, grpc_client.make_inputs(signature_def, 3, 5))
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (request.model_spec.name, request.model_spec.signature_name) == (NAME, signature)
    assert set(request.inputs) == set(signature_def.inputs)
    for name, proto in request.inputs.items():
        assert proto.dtype == signature_def.inputs[name].dtype
    tensors = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    images = signatures[signature](**tensors)["images"].numpy()
    if signature == "sample":
        assert (int(tensors["num"]), int(tensors["seed"])) == (3, 5)
        assert tensors["num"].shape == tensors["seed"].shape == ()
        expected = _sample_images(model, 3, 5)
    else:
        assert tensors["z"].shape == (3, 16)
        expected = model.generate(tensors["z"]).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-5)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """A stand-in for TF Serving's gRPC `PredictionService` over a loaded SavedModel."""

    def __init__(self, signatures, signature_defs):
        self.signatures = signatures
        self.signature_defs = signature_defs

    def GetModelMetadata(self, request, context):
        return _metadata_response(self.signature_defs)

    def Predict(self, request, context):
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.signatures[request.model_spec.signature_name](**inputs)
        except (TypeError, ValueError, tf.errors.OpError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = predict_pb2.PredictResponse(model_spec=request.model_spec)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_grpc_client_end_to_end(trained, signatures, signature_defs, tmp_path):
    model, _ = trained
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(signatures, signature_defs), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        code = grpc_client.main(["--host", "127.0.0.1", "--port", str(port), "--model", NAME,
                                 "--signature", "sample", "--num", "5", "--seed", "7",
                                 "--out", str(tmp_path / "grid.png")])
        assert code == 0
        _assert_png_matches(tmp_path / "grid.png", _sample_images(model, 5, 7))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            bad = grpc_client.build_request(NAME, "serving_default", {"z": np.zeros((1, 15), np.float32)})
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(bad, timeout=30)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "name='z'" in e.value.details()
    finally:
        server.stop(0)


# ---- on-device ----------------------------------------------------------------


def _pins(*names):
    """`name==version` of `names` as pinned in requirements.txt."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if "==" in requirement:
            pins[requirement.split("==")[0].lower()] = requirement
    return [pins[name] for name in names]


@pytest.fixture(scope="session")
def litert_python(tmp_path_factory):
    """The Python of a fresh virtualenv with only ai-edge-litert, numpy and Pillow."""
    venv = tmp_path_factory.mktemp("litert-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *_pins("ai-edge-litert", "numpy", "pillow")],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def _run_on_device(python, model_path, out, *args):
    done = subprocess.run(
        [str(python), "-I", str(EXAMPLES / "generate_on_device.py"), str(model_path), "--out", str(out),
         *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


# TF's int8 calibration uses its own deprecated interpreter internally.
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_on_device_script_without_tensorflow(trained, litert_python, tmp_path):
    model, paths = trained
    no_tf = subprocess.run([str(litert_python), "-I", "-c", "import tensorflow"],
                           capture_output=True, text=True)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr

    num, seed = 7, 3
    z = np.random.default_rng(seed).standard_normal((num, 16), dtype=np.float32)
    expected = model.generate(z).numpy()
    _run_on_device(litert_python, paths["tflite"], tmp_path / "one.png", "--num", num, "--seed", seed)
    _assert_png_matches(tmp_path / "one.png", expected)
    _run_on_device(litert_python, paths["tflite"], tmp_path / "all.png",
                   "--num", num, "--seed", seed, "--batch", num, "--threads", 2)
    _assert_png_matches(tmp_path / "all.png", expected)

    # Full-integer model with int8 inputs and outputs: the script (de)quantizes.
    int8 = write_tflite(model, paths["saved_model"], tmp_path, NAME, Quantize.INT8, int8_io=True)[
        "serving_default"]
    _run_on_device(litert_python, int8, tmp_path / "int8.png", "--num", num, "--seed", seed, "--batch", 4)
    # test_export allows int8 8 gray levels with float I/O; int8 output and PNG rounding add 1 each.
    error = np.abs(np.asarray(Image.open(tmp_path / "int8.png"), np.float64) / 255 - _expected_grid(expected))
    assert error.max() <= 10 * GRAY_LEVEL and error.mean() <= 2 * GRAY_LEVEL
