"""Profiles: counts on the meta device, latency from a real model, and the CLI contract."""

import json
import statistics
import subprocess
import sys
import time

import pytest
import torch

from cnncompare import models, profiling

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "cnncompare", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


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


def test_activation_memory_sees_the_two_biggest_live_maps():
    # VGG16's first two convolutions each output 64x224x224 fp32; both are alive during conv1_2
    act = profiling.activation_bytes("vgg16", 224)
    one_map = 64 * 224 * 224 * 4
    assert 2 * one_map <= act < 3 * one_map
    assert profiling.activation_bytes("vgg16", 112) == pytest.approx(act / 4, rel=0.02)


def test_latency_harness_agrees_with_a_bare_timing_loop():
    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    x = torch.randn(1, 3, 224, 224)

    def bare(n=15):
        times = []
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            for _ in range(n):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    harness, plain = [], []
    for _ in range(3):  # interleave: this machine's speed drifts between runs
        lat, _, _, _ = profiling.measure_latency(model, 224, torch.device("cpu"), batch=1, budget_s=0.5)
        harness.append(lat.p50)
        plain.append(bare())
    ratio = statistics.median(harness) / statistics.median(plain)
    assert 0.85 <= ratio <= 1.15, (harness, plain)


def test_cli_profile_json_contract():
    started = time.perf_counter()
    r = run_cli("profile", "alexnet", "vgg16", "googlenet", "resnet50", "inception_v3", "--no-latency", "--json")
    elapsed = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert [row["name"] for row in rows] == ["alexnet", "vgg16", "googlenet", "resnet50", "inception_v3"]
    keys = {"name", "family", "input_size", "params", "trainable_params", "macs", "flops", "size_mb", "latency_ms",
            "throughput_ips", "device", "ref_top1", "ref_top5"}
    for row in rows:
        assert keys <= set(row)
        assert row["latency_ms"] is None and row["flops"] == 2 * row["macs"]
    assert rows[4]["input_size"] == 299 and rows[1]["ref_top1"] == pytest.approx(71.592)
    print(f"profile --no-latency of 5 models: {elapsed:.1f} s")  # target < 15 s; measured by benchmarks/


def test_cli_profile_table_with_latency():
    r = run_cli("profile", "resnet18", "--size", "64", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert "resnet18" in r.stdout and "p50 ms" in r.stdout and "11.69 M" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["profile", "resnt50"], "Did you mean resnet50"),
    (["profile", "inception_v3", "--size", "32"], "at least 75"),
    (["profile", "alexnet", "--size", "48"], "at least 63"),
    (["profile", "resnet18", "--batch", "0"], "at least 1"),
    (["profile", "resnet18", "--device", "cuda"] if not torch.cuda.is_available() else ["profile", "x"], ""),
    (["blocks", "resnet18", "--freeze", "stages:9"], "stages"),
    (["profile", "resnet18", "--size", "abc"], "invalid int value"),
    (["profile", "resnet50.bogus"], "no weights 'bogus'"),
])
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
