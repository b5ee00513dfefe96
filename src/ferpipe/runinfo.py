"""Seeding, thread count and device, plus the environment facts recorded beside every result."""

from __future__ import annotations

import os
import platform
import random
import resource
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ferpipe.errors import FerError


def setup(threads: int, seed: int | None = None, device: str = "auto") -> torch.device:
    """Fix the thread count (0 = all cores), seed every generator from one `seed` when given,
    and pick the device (`train.device`). Deterministic algorithms are switched on for CUDA
    only: PyTorch's CPU kernels are already deterministic at a fixed thread count (the
    byte-for-byte repro test checks it), and the switch imports torch._inductor, about 2 s of
    every stage process."""
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    chosen = choose_device(device)
    if chosen.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return chosen


def choose_device(name: str, cuda_devices: int | None = None) -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU; `cpu`, `cuda` or
    `cuda:N` as asked, refused when that GPU is not there. `cuda_devices` overrides the count
    PyTorch sees (tests)."""
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if name == "auto":
        return torch.device("cuda:0" if count else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= count:
        raise FerError(
            f"train.device={name}: no such CUDA device (PyTorch sees {count}); use auto or cpu"
        )
    return device


def environment(device: torch.device) -> dict[str, object]:
    """Library versions, device and thread count, for the run record."""
    versions = {name: metadata.version(name) for name in ("torch", "torchvision", "numpy", "dvc")}
    return {
        "python": platform.python_version(),
        "versions": versions,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's model name, family and model as Linux reports them (a VM may hide the name:
    "AMD EPYC"), or the platform's processor string elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    info = {}
    for line in lines:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    name = info.get("model name") or platform.processor() or "unknown CPU"
    return f"{name} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
