"""How the math runs on this hardware, not what it computes: memory layout, compilation and the
optimizer's kernel. Each setting changes results only by float rounding (tests/test_speed.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ferpipe.params import StageParams

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt() options (malloc.h)


@dataclass(frozen=True)
class Speed:
    """`train.channels_last`, `train.compile` and `train.reuse_memory` from params.yaml."""

    channels_last: bool = True
    compile: bool = False
    reuse_memory: bool = True

    @classmethod
    def from_params(cls, p: StageParams | Mapping[str, bool]) -> Speed:
        return cls(p["train.channels_last"], p["train.compile"], p["train.reuse_memory"])

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

    def model(self, model: nn.Module) -> nn.Module:
        """What to call: `model` laid out, then compiled (sharing its parameters) or itself."""
        return self.function(self.layout(model))

    def function(self, fn: Callable) -> Callable:
        """`fn` compiled for fixed shapes (one graph per batch size seen), or `fn` itself. Random
        ops (dropout) keep eager PyTorch's generator, so a compiled run draws the same masks."""
        if not self.compile:
            return fn
        return torch.compile(fn, dynamic=False, options={"fallback_random": True})


def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam (L2 weight decay) with the fused kernel: one pass over each tensor instead of a dozen.
    On the CNN's 37.7M-parameter linear layer the unfused update took 17% of a training step."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
