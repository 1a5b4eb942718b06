"""Profiles: counts on the meta device, latency from a real model, and the CLI contract."""

import json
import subprocess
import sys
import time

import pytest
import torch

from cnncompare import models, profiling
from cnncompare.errors import CNNCompareError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "cnncompare", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_profile_counts_and_measures_a_real_model():
    p = profiling.profile("resnet18", 64, batch=4, device="cpu", budget_s=0.5)
    assert p.params == 11_689_512 and p.trainable_params == p.params
    assert p.flops == 2 * p.macs
    # MACs scale with the number of pixels for a fully convolutional backbone (+ the fixed fc layer)
    assert abs(profiling.count_macs("resnet18", 128) - 512_000) / (p.macs - 512_000) == pytest.approx(4, rel=0.01)
    assert p.size_mb == pytest.approx((11_689_512 + 9_600) * 4 / 2**20, rel=1e-3)  # weights + BN running stats
    assert p.latency_ms.runs >= 10 and 0 < p.latency_ms.p50 <= p.latency_ms.p90
    assert p.throughput_ips > 0 and p.batch == 4
    assert p.device.startswith("cpu") and p.env["torch"] == torch.__version__
    # CPU: no CUDA graph (not a failure, so no warning); achieved TFLOP/s but no known peak
    assert p.latency_graph_ms is None and p.warnings == [] and "fp32" in p.dtype
    assert p.tflops == pytest.approx(2 * p.macs * p.throughput_ips / 1e12)
    assert p.peak_tflops is None and p.peak_fraction is None
    assert "graph" in profiling.GRAPH_NOTE


def test_activation_memory_sees_the_two_biggest_live_maps():
    # VGG16's first two convolutions each output 64x224x224 fp32; both are alive during conv1_2
    act = profiling.activation_bytes("vgg16", 224)
    one_map = 64 * 224 * 224 * 4
    assert 2 * one_map <= act < 3 * one_map
    assert profiling.activation_bytes("vgg16", 112) == pytest.approx(act / 4, rel=0.02)


def test_counting_only_profile_keeps_the_cpu_batch():
    p = profiling.profile("alexnet", latency=False, device="cpu")
    assert p.latency_ms is None and p.throughput_ips is None and p.tflops is None
    assert p.batch == profiling.default_batch(torch.device("cpu")) == 8


def test_graph_latency_is_skipped_off_cuda():
    model = torch.nn.Conv2d(3, 4, 3)
    precision = profiling.runtime.precision_for("cpu")
    assert profiling.measure_graph_latency(model, torch.randn(1, 3, 8, 8), precision) == (None, None)


def _fits_up_to(limit: int, tried: list[int]):
    def run(batch: int) -> str:
        tried.append(batch)
        if batch > limit:
            raise torch.OutOfMemoryError(f"fake: batch {batch} does not fit")
        return f"ran {batch}"

    return run


def test_throughput_batch_halves_on_out_of_memory():
    tried: list[int] = []
    assert profiling.with_batch_backoff(_fits_up_to(64, tried), 256) == ("ran 64", 64)
    assert tried == [256, 128, 64]
    tried.clear()
    assert profiling.with_batch_backoff(_fits_up_to(64, tried), 100) == ("ran 50", 50)


def test_batch_backoff_gives_up_below_the_minimum():
    with pytest.raises(torch.OutOfMemoryError):
        profiling.with_batch_backoff(_fits_up_to(0, []), 8)
    tried: list[int] = []
    with pytest.raises(torch.OutOfMemoryError):
        profiling.with_batch_backoff(_fits_up_to(3, tried), 32, min_batch=8)
    assert tried == [32, 16, 8]


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", None),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("Tesla T4", 65.0),
        ("Tesla V100-SXM2-16GB", 125.0),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("Some Future GPU", None),
    ],
)
def test_peak_tflops_by_device_name(name, peak):
    assert profiling.peak_tflops(name) == peak


def test_cli_profile_json_contract():
    started = time.perf_counter()
    r = run_cli("profile", "alexnet", "vgg16", "googlenet", "resnet50", "inception_v3", "--no-latency", "--json")
    elapsed = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert [row["name"] for row in rows] == ["alexnet", "vgg16", "googlenet", "resnet50", "inception_v3"]
    keys = {
        "name",
        "family",
        "input_size",
        "params",
        "trainable_params",
        "macs",
        "flops",
        "size_mb",
        "latency_ms",
        "throughput_ips",
        "device",
        "ref_top1",
        "ref_top5",
        "latency_graph_ms",
        "tflops",
        "peak_fraction",
        "warnings",
    }
    for row in rows:
        assert keys <= set(row)
        assert row["latency_ms"] is None and row["flops"] == 2 * row["macs"]
    assert rows[4]["input_size"] == 299 and rows[1]["ref_top1"] == pytest.approx(71.592)
    print(f"profile --no-latency of 5 models: {elapsed:.1f} s")  # target < 15 s; measured by benchmarks/


def test_cli_profile_table_with_latency():
    r = run_cli("profile", "resnet18", "--size", "64", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert "resnet18" in r.stdout and "p50 ms" in r.stdout and "11.69 M" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["profile", "resnt50"], "Did you mean resnet50"),
        (["profile", "inception_v3", "--size", "32"], "at least 75"),
        (["profile", "alexnet", "--size", "48"], "at least 63"),
        (["profile", "resnet18", "--batch", "0"], "at least 1"),
        (["profile", "resnet18", "--device", "cuda"] if not torch.cuda.is_available() else ["profile", "x"], ""),
        (["blocks", "resnet18", "--freeze", "stages:9"], "stages"),
        (["profile", "resnet18", "--size", "abc"], "invalid int value"),
        (["profile", "resnet50.bogus"], "no weights 'bogus'"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(args, message):
    r = run_cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    assert message in lines[0]


def test_cli_models_and_blocks():
    r = run_cli("models", "--json")
    assert r.returncode == 0, r.stderr
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert entries["googlenet"]["backend"] == "torchvision" and entries["alexnet"]["min_size"] == 63
    assert entries["resnet50"]["ref_top1"] == pytest.approx(76.13)
    r = run_cli("blocks", "resnet18", "--size", "64", "--freeze", "stages:2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [b["frozen"] for b in data["blocks"]] == [True, True, True, False, False, False]
    assert data["blocks"][1]["out_shape"] == [64, 16, 16]


def test_counting_macs_agrees_with_flopcountermode_and_leaves_other_threads_alone():
    import threading

    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from cnncompare import inference

    meta = models.build("googlenet", device="meta").eval()
    reference = FlopCounterMode(display=False)
    with reference, torch.no_grad():
        meta(torch.empty(1, 3, 224, 224, device="meta"))
    assert profiling.count_macs("googlenet", 224) == reference.get_total_flops() // 2

    # FlopCounterMode hooks every module of the process: a Grad-CAM in another thread failed meanwhile
    errors, done = [], threading.Event()

    def count():
        while not done.is_set():
            profiling.count_macs("resnet50", 224)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        model = models.build("resnet18")
        for _ in range(5):
            try:
                inference.predict(model, np.zeros((64, 64, 3), dtype=np.uint8), size=64)
            except Exception as err:  # noqa: BLE001 - the assertion below reports it
                errors.append(err)
    finally:
        done.set()
        counter.join()
    assert errors == []


def test_input_size_native_is_each_models_own():
    assert profiling.input_size("native") is None and profiling.input_size(None) is None
    assert profiling.input_size("") is None and profiling.input_size("96") == 96 and profiling.input_size(64) == 64
    with pytest.raises(CNNCompareError, match="Input size"):
        profiling.input_size(8)
    with pytest.raises(CNNCompareError, match="not a number"):
        profiling.input_size("big")
    p = profiling.profile("inception_v3", profiling.input_size("native"), latency=False)
    assert p.input_size == 299 and p.year == 2015
