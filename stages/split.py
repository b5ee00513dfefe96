"""Stage split: stratified train/validation split of the training pool; test kept apart."""

from ferpipe import dataset, params, paths, prepare
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main() -> None:
    p = params.for_stage("split")
    parts = prepare.split(
        dataset.load(paths.DENOISED), p["split.val_fraction"], p["seed"], p["split.validation"]
    )
    for name, images in parts.items():
        dataset.save(images, paths.split_file(name))
    print("split: " + ", ".join(f"{name} {len(images)}" for name, images in parts.items()))


if __name__ == "__main__":
    main()
