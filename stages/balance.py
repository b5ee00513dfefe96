"""Stage balance: the task's classes only, training images capped per class."""

from ferpipe import dataset, params, paths, prepare
from ferpipe.errors import FerError, exits_cleanly
from ferpipe.labels import TASK_CLASSES


@exits_cleanly
def main() -> None:
    p = params.for_stage("balance")
    images = dataset.load(paths.NORMALISED)
    if p["balance.drop_duplicates"]:
        kept = prepare.drop_duplicates(images)
        print(f"balance: dropped {len(images) - len(kept)} duplicate and leaked images")
        images = kept
    try:
        images = prepare.balance(images, p["task"], p["balance.max_per_class"], p["seed"])
    except FerError as exc:  # name the source: the data it lacks came from there
        raise FerError(f"{p['data.source']}: {exc}") from None
    dataset.save(images, paths.BALANCED)
    print(f"balance: {dataset.counts(images, TASK_CLASSES[p['task']])}")


if __name__ == "__main__":
    main()
