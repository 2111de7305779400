"""Dense scenes: large images crowded with small objects, with and without tiling.

    PYTHONPATH=src .venv/bin/python bench/bench_dense.py make --root /tmp/rpnkit-dense
    PYTHONPATH=src .venv/bin/python bench/bench_dense.py measure --root /tmp/rpnkit-dense \\
        --plain runs/dense-plain/checkpoint.safetensors \\
        --tiled runs/dense-tiled/checkpoint.safetensors --json dense.json

``make`` writes a COCO dataset of synthetic scenes (``data.synthetic.make_dense_scene``:
2,000 x 2,000 px, 300-800 shapes of 10-40 px each, overlapping at most 0.1 IoU) to
``--root`` (``annotations/instances_{train,val}.json``, ``images/{train,val}/*.png``), outside
the project. The models are trained with ``rpnkit train`` (docs/accuracy.md has the commands).

``measure`` runs each checkpoint over a dataset (``--data``, default the scenes' val split)
plain (resized to ``--short-side``/``--max-size`` as in training) and sliced (``--tile-size``
tiles overlapping by ``--tile-overlap``, merged with cross-tile NMS), and prints recall@1000 at
IoU 0.5 and AR@1000 (COCO-style, 0.5:0.95) per setting, with the seconds per megapixel of
input (wall clock, inference only, after one warm-up image; on this machine's CPU unless
``--device``). ``--top`` is the number of proposals per image (1000: every setting gets as
many, so that the plain pipeline is not held back by its default limit).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rpnkit.data import read_dataset
from rpnkit.data.synthetic import SHAPE_NAMES, make_dense_scene
from rpnkit.engine.runtime import load


def write_scene(folder: Path, split: str, seed: int, size: int, i: int) -> tuple[dict, list]:
    image, boxes, labels = make_dense_scene(seed, i, image_size=size)
    name = f"dense-{split}-{i:03d}.png"
    Image.fromarray(image).save(folder / name)
    print(f"{folder / name}: {len(boxes)} objects", flush=True)
    entry = {"id": i + 1, "file_name": name, "width": size, "height": size}
    return entry, list(zip(boxes.tolist(), labels.tolist()))


def write_split(root: Path, split: str, count: int, seed: int, size: int, workers: int) -> None:
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    scene = functools.partial(write_scene, folder, split, seed, size)
    with multiprocessing.Pool(workers) as pool:  # each scene depends on (seed, i) only
        scenes = pool.map(scene, range(count))
    images, annotations = [], []
    for entry, objects in scenes:
        images.append(entry)
        for (x1, y1, x2, y2), label in objects:
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": entry["id"],
                    "category_id": label,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(SHAPE_NAMES)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    out = root / "annotations" / f"instances_{split}.json"
    coco = {"images": images, "annotations": annotations, "categories": categories}
    out.write_text(json.dumps(coco))


def make(args: argparse.Namespace) -> None:
    root = Path(args.root)
    write_split(root, "train", args.train, seed=1, size=args.size, workers=args.workers)
    write_split(root, "val", args.val, seed=2, size=args.size, workers=args.workers)


def measure_one(predictor, index, label: str, options: dict, top: int) -> dict:
    megapixels = sum(r.width * r.height for r in index.records) / 1e6
    predictor.propose(index.records[0].path, top=top, **options)  # warm-up
    start = time.perf_counter()
    report = predictor.evaluate_proposals(index, top=top, **options)
    seconds = time.perf_counter() - start
    row = {
        "setting": label,
        "recall@1000@0.5": report.metrics["recall@1000@0.5"],
        "recall@1000@0.7": report.metrics["recall@1000@0.7"],
        "AR@1000": report.metrics["AR@1000"],
        "AR@1000_small": report.metrics.get("AR@1000_small"),
        "seconds_per_megapixel": seconds / megapixels,
        "megapixels": megapixels,
    }
    print(
        f"{label:<34} recall@1000@0.5 {row['recall@1000@0.5']:.3f}  AR@1000 {row['AR@1000']:.3f}"
        f"  {row['seconds_per_megapixel']:.2f} s/MP",
        flush=True,
    )
    return row


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = args.data or str(Path(args.root) / "annotations" / "instances_val.json")
    index = read_dataset(data, split=args.split)
    boxes = np.concatenate([r.boxes for r in index.records])
    sides = np.sqrt((boxes[:, 2:] - boxes[:, :2]).prod(axis=1))
    print(
        f"{data}: {len(index.records)} images, {len(boxes)} boxes "
        f"(median side {np.median(sides):.1f} px)"
    )
    sliced = {"tile_size": args.tile_size, "tile_overlap": args.tile_overlap}
    settings = [("plain", {}), (f"sliced {args.tile_size}/{args.tile_overlap}", sliced)]
    if args.full_view:
        settings.append(("sliced + full view", {**sliced, "full_view": True}))
    rows = []
    for name, path in (("plain-trained", args.plain), ("tiled-trained", args.tiled)):
        if path is None:
            continue
        predictor = load(
            path, args.device, short_side=args.short_side, max_size=args.max_size, num_workers=0
        )
        for label, options in settings:
            row = measure_one(predictor, index, f"{name}, {label}", options, args.top)
            rows.append({"model": name, **row})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="write the synthetic dense scenes as a COCO dataset")
    p.add_argument("--root", required=True)
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--val", type=int, default=4)
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1, help="processes writing scenes")
    p.set_defaults(func=make)
    p = sub.add_parser("measure", help="recall and time, plain and sliced")
    p.add_argument("--root", default="/tmp/rpnkit-dense")
    p.add_argument("--data", default=None, help="another dataset (e.g. COCO128)")
    p.add_argument("--split", default="val")
    p.add_argument("--plain", default=None, help="checkpoint trained without tiles")
    p.add_argument("--tiled", default=None, help="checkpoint trained on tiles")
    p.add_argument("--tile-size", type=int, default=512)
    p.add_argument("--tile-overlap", type=int, default=64)
    p.add_argument("--full-view", action="store_true")
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--top", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.set_defaults(func=measure)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
