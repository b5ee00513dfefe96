import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ferpipe.augment import TRANSFORMS, Augmentation, check_presets, preview, warp
from ferpipe.errors import FerError

SEED004 = {
    "transforms": [
        {"name": "hflip"},
        {"name": "jitter", "brightness": 0.2, "contrast": 0.2},
        {"name": "affine", "degrees": 10},
        {"name": "crop", "size": 48, "padding": 4},
        {"name": "erase", "p": 0.5, "scale": [0.02, 0.2], "ratio": [0.3, 3.3], "value": 0},
    ],
    "pick": "all",
    "every": 1,
}
SEED001 = {
    "transforms": [
        {"name": "hflip", "p": 0.5},
        {"name": "jitter", "brightness": 1.0, "contrast": 1.0, "saturation": 1.0},
        {"name": "sharpness", "low": 1.0, "high": 6.0, "p": 1.0},
    ],
    "pick": "all",
    "every": 1,
}
FIXED = [  # transforms without randomness, so a test knows what each one gives
    {"name": "hflip", "p": 1.0},
    {"name": "equalize", "p": 1.0},
    {"name": "sharpness", "low": 3.0, "high": 3.0, "p": 1.0},
]
PRESETS = {
    "seed004": SEED004,
    "seed001": SEED001,
    "fixed": {"transforms": FIXED, "pick": "one", "every": 2},
}


def faces(n: int = 16, seed: int = 0, low: int = 0) -> torch.Tensor:
    """Random gray images with a smooth part, so their histograms and neighbourhoods vary."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(low, 256, (n, 48, 48), generator=gen)
    ramp = torch.linspace(0, 255, 48)[None, None, :].expand(n, 48, 48)
    blend = torch.rand(n, 1, 1, generator=gen)
    return (blend * noise + (1 - blend) * ramp).round().clamp(low, 255).to(torch.uint8)


def run(name: str, images: torch.Tensor, seed: int = 0, **args) -> torch.Tensor:
    return TRANSFORMS.get(name).builder(images, torch.Generator().manual_seed(seed), **args)


def test_hflip_flips_the_drawn_images_as_torchvision():
    x = faces(64)
    out = run("hflip", x, p=0.5)
    flipped = (out == TF.horizontal_flip(x)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 15 < flipped.sum() < 49
    assert torch.equal(run("hflip", x, p=1.0), TF.horizontal_flip(x))
    assert torch.equal(run("hflip", x, p=0.0), x)


def test_equalize_equals_torchvision_exactly():
    x = faces(8)
    x[1] = 77  # one gray level: left as it is
    x[2] = (x[2] > 128).to(torch.uint8) * 255  # two levels
    x[3] = x[3] // 4 + 100  # a narrow range
    x[4] = x[4].clamp(0, 30)  # a dark image with one level holding most pixels
    x[5, :24] = 255  # a peak at the top level
    assert torch.equal(run("equalize", x, p=1.0), TF.equalize(x[:, None])[:, 0])
    assert torch.equal(run("equalize", x, p=0.0), x)


@pytest.mark.parametrize("kind", ["brightness", "contrast"])
def test_jitter_matches_torchvision_at_the_drawn_factor(kind):
    x, v = faces(16), 0.6
    out = run("jitter", x, seed=3, **{kind: v})
    draws = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))  # jitter's first draws
    factors = draws[0 if kind == "brightness" else 1] * 2 * v + (1 - v)
    adjust = TF.adjust_brightness if kind == "brightness" else TF.adjust_contrast
    expected = torch.stack([adjust(x[i : i + 1], f.item())[0] for i, f in enumerate(factors)])
    assert (out.int() - expected.int()).abs().max() <= 1
    assert not torch.equal(out, x)


def test_jitter_saturation_is_a_no_op_on_gray_images():
    x = faces(8)
    assert torch.equal(run("jitter", x, saturation=0.9), x)


@pytest.mark.parametrize("factor", [0.0, 0.5, 3.0])
def test_sharpness_matches_torchvision_at_a_fixed_factor(factor):
    x = faces(8)
    out = run("sharpness", x, low=factor, high=factor, p=1.0)
    assert (out.int() - TF.adjust_sharpness(x[:, None], factor)[:, 0].int()).abs().max() <= 1


def test_crop_is_a_window_of_the_zero_padded_image():
    x = faces(32)
    out = run("crop", x, size=48, padding=4)
    windows = TF.pad(x, [4]).unfold(1, 48, 1).unfold(2, 48, 1)  # (n, 9, 9, 48, 48)
    match = (windows == out[:, None, None]).flatten(3).all(3)
    assert (match.flatten(1).sum(1) == 1).all()  # random images: exactly one window fits
    assert len(set(match.flatten(1).int().argmax(1).tolist())) > 5  # offsets vary


@pytest.mark.parametrize("value", [0, 128])
def test_erase_sets_one_rectangle_within_scale(value):
    x = faces(32, low=1)
    x[x == value] = value + 1
    out = run("erase", x, p=1.0, scale=[0.05, 0.2], ratio=[0.3, 3.3], value=value)
    for image, original in zip(out, x, strict=True):
        changed = image != original
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        assert changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert (image[changed] == value).all()
        h, w = len(rows), len(cols)
        assert 0.05 * 48 * 48 - (h + w) / 2 - 1 <= h * w <= 0.2 * 48 * 48 + (h + w) / 2 + 1


def test_erase_leaves_images_where_no_rectangle_fits():
    x = faces(8)
    assert torch.equal(run("erase", x, p=1.0, scale=[0.99, 1.0], ratio=[1.0, 1.0]), x)
    assert torch.equal(run("erase", x, p=0.0), x)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_with_no_range_is_the_identity(interpolation):
    x = faces(8)
    assert torch.equal(run("affine", x, interpolation=interpolation), x)


def test_warp_by_90_degrees_is_rot90_as_torchvision():
    x, ones, zeros = faces(4), torch.ones(4), torch.zeros(4)
    out = warp(x, 90 * ones, zeros, zeros, ones, zeros)
    assert torch.equal(out, torch.rot90(x, -1, (1, 2)))  # F.affine's angle turns clockwise
    assert torch.equal(out, TF.affine(x[:, None], 90.0, [0, 0], 1.0, [0.0, 0.0])[:, 0])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_warp_matches_torchvision_affine_with_fill_zero(interpolation):
    n, gen = 12, torch.Generator().manual_seed(1)
    x = faces(n)
    angle, zoom = torch.rand(n, generator=gen) * 60 - 30, torch.rand(n, generator=gen) * 0.4 + 0.8
    shear = torch.rand(n, generator=gen) * 40 - 20
    tx, ty = torch.randint(-5, 6, (2, n), generator=gen).float()
    out = warp(x, angle, tx, ty, zoom, shear, interpolation)
    mode = TF.InterpolationMode(interpolation)
    expected = torch.stack(
        [
            TF.affine(x[i : i + 1], a, [dx, dy], z, [s, 0.0], interpolation=mode, fill=0)[0]
            for i, (a, dx, dy, z, s) in enumerate(
                zip(*(t.tolist() for t in (angle, tx, ty, zoom, shear)), strict=True)
            )
        ]
    )
    assert (out.int() - expected.int()).abs().max() <= (interpolation == "bilinear")


def test_affine_translation_shifts_by_whole_pixels_within_range():
    x = faces(12)
    out = run("affine", x, translate=0.1)  # up to 4.8 pixels, rounded to 5
    windows = TF.pad(x, [5]).unfold(1, 48, 1).unfold(2, 48, 1)  # (n, 11, 11, 48, 48)
    match = (windows == out[:, None, None]).flatten(3).all(3).flatten(1)
    assert (match.sum(1) == 1).all() and len(set(match.int().argmax(1).tolist())) > 5
    for image, original, at in zip(out, x, match.int().argmax(1).tolist(), strict=True):
        shift = [5 - at % 11, 5 - at // 11]  # window (row, col) -> torchvision's (dx, dy)
        assert torch.equal(TF.affine(original[None], 0.0, shift, 1.0, 0.0)[0], image)


@pytest.mark.parametrize(
    "name", ["hflip", "affine", "crop", "jitter", "sharpness", "erase", "equalize"]
)
def test_every_transform_returns_a_new_uint8_batch_and_keeps_its_input(name):
    x = faces(8)
    before = x.clone()
    out = run(name, x)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out is not x
    assert torch.equal(x, before)


def test_same_seed_same_outputs_other_seed_others():
    x = faces(16)
    first, again, other = (Augmentation.from_params("seed004", PRESETS, s) for s in (7, 7, 8))
    outputs = [[aug(x, e) for e in (1, 1, 2)] for aug in (first, again, other)]
    assert all(torch.equal(a, b) for a, b in zip(outputs[0], outputs[1], strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(outputs[0], outputs[2], strict=True))
    assert not torch.equal(outputs[0][0], outputs[0][1])  # the generator moves on
    assert torch.equal(x, faces(16))


def test_pick_one_every_2_uses_one_transform_per_even_epoch():
    x = faces(8)
    expected = {
        s["name"]: run(s["name"], x, **{k: v for k, v in s.items() if k != "name"}) for s in FIXED
    }
    aug = Augmentation.from_params("fixed", PRESETS, seed=5)
    picked = set()
    for epoch in range(1, 21):
        outputs = [aug(x, epoch) for _ in range(3)]
        if epoch % 2:
            assert all(out is x for out in outputs) and aug.plan(epoch) == []
            continue
        [(name, _)] = aug.plan(epoch)
        assert all(torch.equal(out, expected[name]) for out in outputs)
        picked.add(name)
    assert len(picked) > 1


def test_pick_one_draws_from_seed_and_epoch_only():
    x = faces(8)
    busy, fresh, other = (Augmentation.from_params("fixed", PRESETS, s) for s in (5, 5, 6))
    for epoch in (2, 4):
        for _ in range(epoch):
            busy(x, epoch)
    plans = [[aug.plan(e) for e in range(2, 41, 2)] for aug in (busy, fresh, other)]
    assert plans[0] == plans[1] != plans[2]
    assert torch.equal(busy(x, 6), fresh(x, 6))


def test_pick_all_applies_the_transforms_in_order():
    x = faces(8)
    preset = {"transforms": FIXED[2:0:-1], "pick": "all", "every": 1}  # sharpness, then equalize
    out = Augmentation.from_params("ordered", {"ordered": preset}, 0)(x, 1)
    sharpened = run("sharpness", x, low=3.0, high=3.0, p=1.0)
    assert torch.equal(out, run("equalize", sharpened, p=1.0))
    assert not torch.equal(
        out, run("sharpness", run("equalize", x, p=1.0), low=3.0, high=3.0, p=1.0)
    )


def test_none_returns_the_input():
    x = faces(4)
    aug = Augmentation.from_params("none", {}, 0)
    assert not aug.active and aug(x, 1) is x and aug(x, 2) is x
    assert Augmentation.from_params("seed001", PRESETS, 0).active


def test_an_unknown_preset_name_is_refused():
    with pytest.raises(FerError, match=r"augment='seed009' .* use one of: none, seed004"):
        Augmentation.from_params("seed009", PRESETS, 0)


def test_the_seed_recipes_are_valid():
    check_presets(PRESETS)


def bad(path: str, value) -> dict:
    """PRESETS with the key at `path` ("seed004.transforms.2.name") set to value (None: removed)."""
    presets = {
        k: {**v, "transforms": [dict(s) for s in v["transforms"]]} for k, v in PRESETS.items()
    }
    *parents, last = path.split(".")
    node = presets
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return presets


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("seed004.transforms.2.name", "blur", r"augment\.seed004\.transforms\[2\]\.name='blur' is not a transform; use one of: affine, crop,"),
        ("seed004.transforms.0.q", 1, r"augment\.seed004\.transforms\[0\]\.q: hflip takes no argument 'q'; it takes: p"),
        ("seed004.transforms.0.p", "high", r"augment\.seed004\.transforms\[0\]\.p='high' must be a finite number"),
        ("seed004.transforms.2.interpolation", "cubic", r"transforms\[2\]\.interpolation='cubic' must be one of: nearest, bilinear"),
        ("seed004.transforms.4.scale", 0.2, r"transforms\[4\]\.scale=0\.2 must be a list of float"),
        ("seed004.transforms.0.p", 1.5, r"augment\.seed004\.transforms\[0\]\.p=1\.5 must be within \[0, 1\]"),
        ("seed004.transforms.4.scale", [0.3, 0.1], r"transforms\[4\]\.scale=\[0\.3, 0\.1\] must be 2 numbers, 0 < first <= second <= 1"),
        ("seed004.transforms.4.ratio", [1.0], r"transforms\[4\]\.ratio=\[1\.0\] must be 2 numbers"),
        ("seed004.transforms.4.value", 300, r"transforms\[4\]\.value=300 must be a gray level"),
        ("seed004.transforms.3.padding", -1, r"transforms\[3\]\.padding=-1 must be >= 0"),
        ("seed004.transforms.3.size", 0, r"transforms\[3\]\.size=0 must fit the padded image side"),
        ("seed004.transforms.2.degrees", -5, r"transforms\[2\]\.degrees=-5 must be >= 0"),
        ("seed004.transforms.1.contrast", -0.1, r"transforms\[1\]\.contrast=-0\.1 must be >= 0"),
        ("seed001.transforms.2.low", 7.0, r"augment\.seed001\.transforms\[2\]\.low=7\.0 must be within \[0, high=6\.0\]"),
        ("seed004.every", None, r"augment\.seed004\.every is missing; a preset has exactly: transforms, pick, every"),
        ("seed004.repeat", 2, r"augment\.seed004\.repeat is not a preset key"),
        ("seed004.pick", "some", r"augment\.seed004\.pick='some' must be one of: all, one"),
        ("seed004.every", 0, r"augment\.seed004\.every=0 must be a positive integer"),
        ("seed004.every", True, r"augment\.seed004\.every=True must be a positive integer"),
        ("seed004.transforms", [], r"augment\.seed004\.transforms must be a non-empty list"),
        ("seed004.transforms.1", "jitter", r"augment\.seed004\.transforms\[1\]\.name=None is not a transform"),
    ],
)  # fmt: skip
def test_check_presets_names_the_bad_key(path, value, message):
    with pytest.raises(FerError, match=message):
        check_presets(bad(path, value))


def test_a_preset_named_none_is_refused():
    with pytest.raises(FerError, match=r"augment\.none: the name none is reserved"):
        check_presets({"none": SEED001})


def test_from_params_checks_the_preset():
    with pytest.raises(FerError, match=r"augment\.seed004\.pick='some'"):
        Augmentation.from_params("seed004", bad("seed004.pick", "some"), 0)


@pytest.mark.parametrize("name", ["seed001", "none"])
def test_preview_writes_a_png_and_leaves_the_augmentation_as_it_was(tmp_path, name):
    x, labels = faces(10), [f"class {i}" for i in range(10)]
    aug, twin = (Augmentation.from_params(name, PRESETS, 3) for _ in range(2))
    path = tmp_path / "preview.png"
    preview(x, labels, aug, path, epochs=2)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(data) < 1_000_000
    assert torch.equal(aug(x, 1), twin(x, 1))
