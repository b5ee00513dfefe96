"""Stage download: decode `data.source` once into the normalised dataset and its manifest."""

from ferpipe import dataset, params, paths, sources
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main() -> None:
    p = params.for_stage("download")
    decoded = sources.read_source(p["data.source"], sha256=p["data.sha256"])
    if decoded.converted:
        print(f"WARNING: converted {decoded.converted} images that were not 48x48 grayscale")
    for note in decoded.notes:
        print(f"note: {note}")
    dataset.save(decoded.images, paths.NORMALISED)
    manifest = {
        "source": p["data.source"],
        "source_sha256": decoded.source_sha256,
        "images": len(decoded.images),
        "converted_images": decoded.converted,
        "notes": decoded.notes,
        "counts": dataset.counts(decoded.images),
    }
    dataset.write_json(manifest, paths.MANIFEST)
    print(f"download: {len(decoded.images)} images from {p['data.source']} -> {paths.NORMALISED}")


if __name__ == "__main__":
    main()
