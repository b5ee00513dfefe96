"""Speed settings change how the math runs, never what it computes (beyond float rounding)."""

import platform
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from ferpipe import losses, models, training
from ferpipe import speed as speed_module
from ferpipe.optim import Optimisation, adam
from ferpipe.speed import Speed

from .test_training import _toy

CPU = torch.device("cpu")


def _fit(
    speed: Speed, fused: bool = True, dropout_first: bool = False
) -> list[training.EpochRecord]:
    """The CNN trained on toy data for an epoch of 2 steps with `speed`. fused=False is the optimizer used
    before the speed settings, dropout_first the layer order used before them."""
    torch.manual_seed(0)
    model = models.build("study_cnn", 2)
    if dropout_first:
        *convs, flatten, dropout = model.body
        model.body = torch.nn.Sequential(*convs, dropout, flatten)
    optimizer = (
        adam(model.parameters(), 1e-4, 1e-4)
        if fused
        else torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    )
    loss_fn = losses.make_loss("ce", [1.0, 1.5], 2.0)
    trainee = speed.model(model, CPU)
    plan = training.Plan(epochs=1, batch_size=16, seed=0)
    history, _, _ = training.fit(
        trainee, loss_fn, Optimisation(optimizer, None), _toy(32), _toy(16, seed=1), plan, CPU
    )
    return history


def _close(a: list[training.EpochRecord], b: list[training.EpochRecord]) -> bool:
    return all(
        x.train_accuracy == y.train_accuracy
        and x.val_accuracy == y.val_accuracy
        and x.train_loss == pytest.approx(y.train_loss, rel=1e-3)
        and x.val_loss == pytest.approx(y.val_loss, rel=1e-3)
        for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def before() -> list[training.EpochRecord]:
    """Training as it ran before the speed settings: NCHW, eager, unfused Adam, dropout on the
    pooled map before flattening."""
    return _fit(Speed(channels_last=False, compile=False), fused=False, dropout_first=True)


def test_fused_adam_takes_the_same_steps_as_plain_adam():
    torch.manual_seed(0)
    weights = [torch.randn(300, 7, requires_grad=True), torch.randn(7, requires_grad=True)]
    copies = [w.detach().clone().requires_grad_() for w in weights]
    start = weights[0].detach().clone()
    fused, plain = adam(weights, 1e-2, 1e-3), torch.optim.Adam(copies, lr=1e-2, weight_decay=1e-3)
    for step in range(5):
        for ws, opt in ((weights, fused), (copies, plain)):
            opt.zero_grad()
            ((ws[0] * (step + 1)).sum() + ws[1].pow(2).sum()).backward()
            opt.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights, copies, strict=True))
    assert fused.defaults["fused"] and not torch.allclose(weights[0], start, atol=1e-3)


def test_channels_last_lays_out_conv_weights_nhwc_and_gives_the_same_outputs():
    torch.manual_seed(0)
    nchw = models.build("resnet18", 4, weights="none", image_size=64)
    x = nchw.eval().preprocess(torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8))
    expected = nchw(x)
    nhwc = Speed(channels_last=True).layout(nchw)
    assert nhwc.net.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(nhwc(x), expected, atol=1e-5)
    plain = Speed(channels_last=False).layout(models.build("study_cnn", 2))
    assert plain.body[0].weight.is_contiguous()


def test_channels_last_training_matches_the_run_before_it(before):
    assert _close(_fit(Speed(channels_last=True, compile=False)), before)


def test_dropout_after_flatten_drops_the_same_units_in_nchw(before):
    assert _fit(Speed(channels_last=False, compile=False), fused=False) == before


def test_compiled_training_runs_compiled_graphs_and_matches_the_eager_run(before):
    graphs = counters["stats"]["unique_graphs"]
    history = _fit(Speed(channels_last=True, compile=True))
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo captured and compiled the model
    assert _close(history, before)


PAGE_FAULTS = """
import resource, sys, torch
from ferpipe import models
from ferpipe import speed as speed_module
from ferpipe.optim import adam
from ferpipe.speed import Speed
print(Speed(reuse_memory=sys.argv[1] == "on").configure_allocator())
model = models.build("study_cnn", 4)
optimizer = adam(model.parameters(), 1e-3, 0)
x = model.preprocess(torch.zeros(32, 48, 48, dtype=torch.uint8))  # 38 MB activations: above
faults = []  # the 32 MB up to which glibc raises its mmap threshold by itself
for _ in range(4):
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    optimizer.zero_grad(set_to_none=True)
    model(x).sum().backward()
    optimizer.step()
faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
print(faults[-1] - faults[2])  # the last two steps, after two warm-up steps
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_reuse_memory_stops_large_tensors_being_page_faulted_in_again():
    def faults(setting: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS, setting], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    (took_default, default), (took_reuse, reused) = faults("off"), faults("on")
    assert (took_default, took_reuse) == ("False", "True")
    assert default > 0 and reused * 10 < default


def test_bf16_runs_the_model_under_autocast_and_keeps_weights_and_outputs_fp32():
    torch.manual_seed(0)
    model = models.build("study_cnn", 2).eval()
    x = model.preprocess(torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8))
    fast = Speed(precision="bf16").model(model, CPU)
    assert fast.preprocess is model.preprocess
    with torch.no_grad():
        out, expected = fast(x), model(x)
    assert out.dtype == torch.float32 and all(w.dtype == torch.float32 for w in model.parameters())
    assert not torch.equal(out, expected) and torch.allclose(out, expected, atol=0.1)
    assert Speed(precision="fp32").model(model, CPU) is model


@pytest.mark.parametrize(("flags", "chosen"), [({"avx2"}, False), ({"avx2", "amx_bf16"}, True),
                                               ({"avx512_bf16"}, True)])  # fmt: skip
def test_auto_takes_bf16_only_where_the_cpu_runs_it_fast(monkeypatch, flags, chosen):
    monkeypatch.setattr(speed_module, "cpu_flags", lambda: flags)
    assert Speed(precision="auto").bf16(CPU) is chosen
    assert Speed(precision="bf16").bf16(CPU) and not Speed(precision="fp32").bf16(CPU)


def test_bf16_training_is_deterministic_and_close_to_fp32():
    """A small block CNN (emulated bf16 is slow on CPUs without AMX) trained 2 epochs twice."""

    def fit(precision: str) -> list[training.EpochRecord]:
        torch.manual_seed(0)
        model = models.build("block_cnn", 2, **models.architecture("block_cnn").tiny)
        plan = training.Plan(epochs=2, batch_size=16, seed=0)
        trainee = Speed(precision=precision).model(model, CPU)
        optimizer = Optimisation(adam(model.parameters(), 1e-3, 0), None)
        loss_fn = losses.make_loss("ce", [1, 1], 0)
        return training.fit(trainee, loss_fn, optimizer, _toy(32), _toy(16, 1), plan, CPU)[0]

    bf16, fp32 = fit("bf16"), fit("fp32")
    assert bf16 == fit("bf16") and bf16 != fp32
    assert bf16[-1].train_loss == pytest.approx(fp32[-1].train_loss, rel=0.05)
