"""LiteRT (TFLite) conversion of a SavedModel signature.

Converted from the SavedModel (not from concrete functions, which lose the
signature) with builtin ops only: a graph that needs a Flex (select TF) op
fails to convert instead of producing a model phones cannot run.
"""

import enum

import numpy as np
import tensorflow as tf


class Quantize(str, enum.Enum):
    """Quantization modes of `convert`."""

    NONE = "none"  # float32 weights and compute
    FLOAT16 = "float16"  # float16 weights, float32 compute on CPU
    DYNAMIC = "dynamic"  # int8 weights, float activations
    INT8 = "int8"  # full integer; needs representative data


def convert(saved_model_dir, signature="serving_default", quantize=Quantize.NONE,
            representative_data=None, int8_io=False):
    """Converts one signature of a SavedModel to a `.tflite` flatbuffer.

    Args:
        saved_model_dir: a SavedModel version folder.
        signature: the signature key to convert.
        quantize: a `Quantize` mode or its string value.
        representative_data: for `int8`, a callable returning an iterable of
            `{input_name: np.ndarray}` batches drawn from the model's inputs.
        int8_io: for `int8`, make inputs/outputs int8 too (else float32).

    Returns:
        The model as `bytes`.
    """
    try:
        quantize = Quantize(quantize)
    except ValueError:
        raise ValueError(
            f"unknown quantization mode {quantize!r}; choose from {[m.value for m in Quantize]}"
        ) from None
    if quantize is Quantize.INT8 and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data (inputs to calibrate on)")
    if int8_io and quantize is not Quantize.INT8:
        raise ValueError("int8_io applies only to quantize='int8'")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[signature]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not Quantize.NONE:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize is Quantize.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quantize is Quantize.INT8:
        converter.representative_dataset = lambda: (
            {k: np.asarray(v, np.float32) for k, v in batch.items()}
            for batch in representative_data()
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def custom_ops(tflite_bytes):
    """Names of the custom ops (Flex ops start with 'Flex') in a model."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(code.CustomCode().decode())
    return sorted(names)


def builtin_ops(tflite_bytes):
    """Names of the builtin ops a model uses."""
    from ai_edge_litert import schema_py_generated as schema

    by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    codes = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.add(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    return sorted(by_code[c] for c in codes if c != schema.BuiltinOperator.CUSTOM)
