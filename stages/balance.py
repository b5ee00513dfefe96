"""Stage balance: the task's classes only, training images capped per class."""

from ferpipe import dataset, params, paths, prepare
from ferpipe.errors import exits_cleanly
from ferpipe.labels import TASK_CLASSES


@exits_cleanly
def main() -> None:
    p = params.for_stage("balance")
    images = prepare.balance(
        dataset.load(paths.NORMALISED), p["task"], p["balance.max_per_class"], p["seed"]
    )
    dataset.save(images, paths.BALANCED)
    print(f"balance: {dataset.counts(images, TASK_CLASSES[p['task']])}")


if __name__ == "__main__":
    main()
