"""``propose`` on a folder of mixed photographs with and without batches of one orientation
(``Predictor.group_by_aspect``), on this machine's device: images/s, and the share of the
padded batches that is image.

    PYTHONPATH=src python bench/bench_infer_grouping.py --data ../shared/data/coco128 --images 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import rpnkit
from rpnkit.data import read_dataset
from rpnkit.data.transforms import resize_scale, resized_size
from rpnkit.engine.checkpoint import RPN, ModelSpec, save_model
from rpnkit.engine.runner import GROUP_WINDOW, grouped_batches
from rpnkit.modeling.presets import preset_config, without_pretrained_weights
from rpnkit.modeling.sizes import padded_size


def image_share(sizes: list[tuple[int, int]], batches: list[list[int]]) -> float:
    """Image pixels over the padded batches' pixels."""
    image = sum(h * w for h, w in sizes)
    padded = 0
    for b in batches:
        h, w = padded_size(max(sizes[i][0] for i in b), max(sizes[i][1] for i in b))
        padded += len(b) * h * w
    return image / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--preset", default="effnet-lite0-fpn")
    parser.add_argument("--short-side", type=int, default=512)
    parser.add_argument("--max-size", type=int, default=853)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    index = read_dataset(args.data, split="train2017")
    index.records = index.records[: args.images]
    spec = ModelSpec(RPN, without_pretrained_weights(preset_config(args.preset)))
    torch.manual_seed(0)
    model = spec.build(pretrained=False)
    path = save_model(Path("/tmp/bench_infer_grouping.safetensors"), model, spec)
    runtime = rpnkit.load(path, args.device, short_side=args.short_side, max_size=args.max_size)
    scale = [resize_scale(r.height, r.width, args.short_side, args.max_size) for r in index.records]
    sizes = [resized_size(r.height, r.width, s) for r, s in zip(index.records, scale)]
    groups = [int(r.height > r.width) for r in index.records]
    n, bs = len(sizes), args.batch_size
    in_order = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
    share = {
        "grouped": round(image_share(sizes, grouped_batches(groups, bs, GROUP_WINDOW)), 3),
        "mixed": round(image_share(sizes, in_order), 3),
    }
    out = {"device": str(runtime.device), "torch": torch.__version__, "args": vars(args),
           "image_share": share}  # fmt: skip
    runtime.propose(index.records[0].path, top=100)  # first call's set-up, outside the timing
    for grouped in [True, False] * args.repeats:
        runtime.group_by_aspect = grouped
        start = time.perf_counter()
        runtime.propose(index, top=100, batch_size=bs)
        rate = n / (time.perf_counter() - start)
        out.setdefault("grouped" if grouped else "mixed", []).append(round(rate, 2))
        print("grouped" if grouped else "mixed", round(rate, 2), "images/s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
