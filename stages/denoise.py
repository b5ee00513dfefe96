"""Stage denoise: median filter every image once (kernel 1 = off)."""

from ferpipe import dataset, params, paths, prepare
from ferpipe.dataset import Images
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main() -> None:
    p = params.for_stage("denoise")
    images = dataset.load(paths.BALANCED)
    filtered = prepare.median_filter(images.pixels, p["denoise.kernel_size"])
    dataset.save(Images(filtered, images.labels, images.splits, images.ids), paths.DENOISED)
    print(f"denoise: {len(images)} images, median kernel {p['denoise.kernel_size']}")


if __name__ == "__main__":
    main()
