"""benchmarks/speed.py: its RESULT line, bf16 where the CPU runs it fast and 0 elsewhere."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferpipe.speed import fast_bf16

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
KEYS = [
    *("cnn_ips", "cnn_peak", "resnet_ips", "resnet_peak", "cnn_speedup", "resnet_epoch_speedup"),
    *("cnn_bf16_ips", "resnet_bf16_ips", "cnn_bf16_ratio", "resnet_bf16_ratio"),
    "resnet_bf16_epoch_speedup",
    "seed_grid_s",
    "seed_grid_train_s",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _parse(line: str) -> dict[str, float]:
    assert line.startswith("RESULT ")
    return {k: float(v) for k, v in (field.split("=") for field in line.split()[1:])}


def _result(bench, kind: str, ours: dict[str, float], pipeline: dict[str, float] | None = None):
    """A ModelResult with 128-image timings at the given images/s, seed-style training at 10
    images/s and evaluation at 40."""
    timings = {p: bench.Timing(128, 128 / ips) for p, ips in ours.items()}
    seed = bench.Timing(128, 12.8), bench.Timing(128, 3.2)
    return bench.ModelResult(kind, 1.5, timings, *seed, pipeline or {})


def test_the_result_line_gives_bf16_figures_and_their_ratios(bench):
    results = {
        "cnn": _result(bench, "cnn", {"fp32": 100.0, "bf16": 200.0}),
        "resnet": _result(bench, "resnet", {"fp32": 40.0, "bf16": 88.0}, {"fp32": 50, "bf16": 25}),
    }
    got = _parse(bench.result_line(results, peak=300.0))
    assert list(got) == KEYS
    assert got["cnn_bf16_ips"] == 200.0 and got["cnn_bf16_ratio"] == 2.0
    assert got["resnet_bf16_ratio"] == 2.2
    seed_epoch = bench.EPOCH_IMAGES / 10  # seconds at 10 images/s
    assert got["resnet_epoch_speedup"] == pytest.approx(seed_epoch / 50, abs=0.005)
    assert got["resnet_bf16_epoch_speedup"] == pytest.approx(seed_epoch / 25, abs=0.005)
    assert got["cnn_peak"] == pytest.approx(100 * 100 * 1.5 / 300, abs=0.05)


def test_without_bf16_its_figures_are_zero(bench):
    results = {k: _result(bench, k, {"fp32": 50.0}, {"fp32": 60} if k == "resnet" else None)
               for k in bench.KINDS}  # fmt: skip
    got = _parse(bench.result_line(results, peak=300.0))
    assert [got[k] for k in KEYS[6:11]] == [0.0] * 5
    assert got["cnn_ips"] == 50.0


def test_the_seed_grid_counts_every_epoch_validation_and_test(bench):
    """12 runs: per task and loss the CNN 10 epochs and the ResNet 5 and 10, every epoch
    training and validating, every run ending with a test pass (seed 000's loop)."""
    results = {k: _result(bench, k, {"fp32": 50.0}) for k in bench.KINDS}
    train = sum(2 * e * t for t, _, _ in bench.GRID_IMAGES.values() for e in (10, 5, 10)) / 10
    checks = sum(2 * (e * v + s) for _, v, s in bench.GRID_IMAGES.values() for e in (10, 5, 10))
    assert bench.seed_grid_seconds(results, validate=False) == pytest.approx(train)
    assert bench.seed_grid_seconds(results) == pytest.approx(train + checks / 40)
    multiclass_cnn = 2 * 10 * (12_796 / 10 + 3_199 / 40) + 2 * 5_003 / 40
    assert bench.seed_grid_seconds(results) > multiclass_cnn


def test_a_quick_run_measures_both_precisions_where_bf16_is_fast(tmp_path):
    """The whole script on synthetic images (no archive at that path), tiny sizes."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--archive", str(tmp_path / "none.zip")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    got = _parse(lines[-1])
    assert "SYNTHETIC" in done.stdout and any(line.startswith("CPU: ") for line in lines)
    assert any(line.startswith("matmul peak bf16: ") for line in lines)
    assert got["cnn_ips"] > 0 and got["resnet_ips"] > 0
    assert got["seed_grid_s"] > got["seed_grid_train_s"] > 0
    if fast_bf16(torch.device("cpu")):
        assert got["cnn_bf16_ips"] > 0 and got["resnet_bf16_ratio"] > 0
    else:
        assert got["cnn_bf16_ips"] == 0 and "bf16 steps not measured" in done.stdout
