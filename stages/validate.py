"""Stage validate: data-quality report of the normalised dataset, tracked as DVC metrics."""

from ferpipe import dataset, paths, quality
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main() -> None:
    counts = quality.report(dataset.load(paths.NORMALISED))
    dataset.write_json(counts, paths.QUALITY)
    print("validate: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
