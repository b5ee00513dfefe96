"""Seeding, thread count and device, plus the environment facts recorded beside every result."""

from __future__ import annotations

import os
import platform
import random
from importlib import metadata

import numpy as np
import torch


def setup(threads: int, seed: int | None = None) -> torch.device:
    """Fix the thread count (0 = all cores), seed every generator from one `seed` when given,
    and pick CUDA when present."""
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
