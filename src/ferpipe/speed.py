"""How the math runs on this hardware, not what it computes: memory layout, compilation and the
optimizer's kernel. Each setting changes results only by float rounding (tests/test_speed.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ferpipe.params import StageParams

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt() options (malloc.h)


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with fast bf16 matmul


def cpu_flags() -> set[str]:
    """The ISA flags Linux reports for this CPU (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()[2:]}


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 here: a GPU that supports it, or a CPU with AMX or
    AVX-512 BF16. Elsewhere bf16 is emulated (on an AVX2 EPYC about 20x slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & set(BF16_FLAGS))


class Autocast(nn.Module):
    """Runs `inner` under bf16 autocast and returns fp32, so losses, softmax and the optimiser
    (weights and its state stay fp32) never see bf16. Shares `inner`'s parameters."""

    def __init__(self, inner: nn.Module, device_type: str):
        super().__init__()
        self.inner, self.device_type = inner, device_type
        self.preprocess = getattr(inner, "preprocess", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_bf16(self.inner, x, self.device_type)


def in_bf16(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device_type: str):
    """`fn(x)` with bf16 autocast (matmuls and convolutions in bf16), the result back in fp32."""
    with torch.autocast(device_type, dtype=torch.bfloat16):
        return fn(x).float()


@dataclass(frozen=True)
class Speed:
    """`train.channels_last`, `train.compile`, `train.reuse_memory` and `train.precision` from
    params.yaml."""

    channels_last: bool = True
    compile: bool = False
    reuse_memory: bool = True
    precision: str = "fp32"

    @classmethod
    def from_params(cls, p: StageParams | Mapping[str, bool | str]) -> Speed:
        keys = ("channels_last", "compile", "reuse_memory", "precision")
        return cls(*(p[f"train.{k}"] for k in keys))

    def bf16(self, device: torch.device) -> bool:
        """Whether this run computes in bf16: asked for, or `auto` where it is fast."""
        return self.precision == "bf16" or (self.precision == "auto" and fast_bf16(device))

    def configure_allocator(self) -> bool:
        """With reuse_memory, have glibc's malloc keep freed memory for reuse instead of handing
        each large block back to the OS: by default every tensor over 32 MB (the CNN's
        activations are 75 MB a batch) is mmapped afresh and page-faulted in at every step,
        which costs the CNN step 30 %. Process-wide; returns whether it took effect (glibc)."""
        if not self.reuse_memory or platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

    def layout(self, model: nn.Module) -> nn.Module:
        """`model` with its conv weights laid out NHWC, in place, when channels_last: oneDNN's
        CPU convolutions convert NCHW inputs themselves and run faster that way (measured here:
        ResNet steps 1.3-1.4x, the CNN step 1.05-1.1x)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def model(self, model: nn.Module, device: torch.device) -> nn.Module:
        """What to call: `model` laid out, under bf16 autocast when `bf16`, then compiled
        (sharing its parameters) or itself."""
        model = self.layout(model)
        return self.function(Autocast(model, device.type) if self.bf16(device) else model)

    def features(self, model: nn.Module, device: torch.device) -> Callable:
        """What computes `model.features`: under bf16 autocast when `bf16`, compiled or not."""
        fn = model.features
        if self.bf16(device):
            fn = functools.partial(in_bf16, model.features, device_type=device.type)
        return self.function(fn)

    def function(self, fn: Callable) -> Callable:
        """`fn` compiled for fixed shapes (one graph per batch size seen), or `fn` itself. Random
        ops (dropout) keep eager PyTorch's generator, so a compiled run draws the same masks."""
        if not self.compile:
            return fn
        return torch.compile(fn, dynamic=False, options={"fallback_random": True})
