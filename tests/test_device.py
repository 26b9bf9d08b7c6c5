"""zoo.device: the CPU facts and the device kind that pick hardware-dependent defaults."""

import pytest
import tensorflow as tf

import zoo
from zoo import device
from zoo.training import TrainConfig

AMX_XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
            "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
            "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
            "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


def test_cpu_info_reads_the_model_name_and_every_flag(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AMX_XEON)
    name, flags = device.cpu_info(cpuinfo)
    assert name == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert {"amx_tile", "amx_int8", "avx512_bf16"} <= flags and "model" not in flags
    assert device.cpu_info(tmp_path / "missing") == ("", frozenset())


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU machine is kind 'gpu'")
def test_device_kind_separates_amx_cpus(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AMX_XEON)
    assert device.device_kind(cpuinfo) == "cpu-amx"
    cpuinfo.write_text(EPYC)
    assert device.device_kind(cpuinfo) == "cpu"
    assert device.device_kind(tmp_path / "missing") == "cpu"


@pytest.mark.parametrize("family", sorted(zoo.FAMILIES))
def test_every_family_has_an_xla_choice_per_device_kind(family):
    cls = zoo.FAMILIES[family]
    assert set(cls.xla_by_device) == set(device.DEVICE_KINDS)
    for kind in device.DEVICE_KINDS:
        assert cls.xla_by_default(kind) is cls.xla_by_device[kind]


@pytest.mark.parametrize("family", sorted(zoo.FAMILIES))
def test_train_config_takes_this_machines_xla_default(family, monkeypatch):
    cls = zoo.FAMILIES[family]
    for kind in device.DEVICE_KINDS:
        monkeypatch.setattr(device, "device_kind", lambda kind=kind: kind)
        assert TrainConfig(model=family).resolved().jit is cls.xla_by_device[kind]
        assert TrainConfig(model=family, jit=False).resolved().jit is False


def test_machine_names_the_cpu_and_its_kind():
    info = device.machine()
    assert info["kind"] in device.DEVICE_KINDS and info["cores"] >= 1
    assert info["cpu"] == (device.cpu_info()[0] or info["cpu"])
