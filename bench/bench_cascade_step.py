"""The Cascade RPN's cost: its training step and proposal stage against the vanilla RPN's, with
stage 2's adaptive convolution computed by torchvision's ``deform_conv2d`` or by
``sampled_conv2d`` (bilinear samples + one matmul; ``CascadeConfig.adaptive_conv``).

    PYTHONPATH=src .venv/bin/python bench/bench_cascade_step.py                # the CPU
    PYTHONPATH=src python bench/bench_cascade_step.py --device cuda --batch-size 8 --size 512

COCO128 photographs (``--data``) resized to ``--size`` px on the shorter side, one batch,
random-weight models built from the presets (the cost does not depend on the weights); the
two cascade variants start from the same weights, and their losses are compared (equal up to
float rounding) before timing. Median of ``--repeats`` steps after two warm-up steps; CUDA
synchronised around each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from rpnkit.data import DetectionDataset, collate, read_dataset, train_transforms
from rpnkit.modeling.presets import build_model, preset_config


def seconds(fn, device: torch.device, repeats: int) -> float:
    for _ in range(2):
        fn()
    runs = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def model_for(name: str, adaptive: str | None, device: torch.device):
    config = preset_config(name)
    if adaptive is not None:
        config = dataclasses.replace(
            config, cascade=dataclasses.replace(config.cascade, adaptive_conv=adaptive)
        )
    torch.manual_seed(0)  # the same weights for both cascade variants
    return build_model(config).to(device)


def measure(model, batch, device, repeats: int) -> dict:
    def step():
        model.train()
        out = model(batch.images, batch.image_sizes, batch.targets)
        sum(out.losses.values()).backward()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def propose():
        model.eval()
        model(batch.images, batch.image_sizes)

    model.train()
    losses = model(batch.images, batch.image_sizes, batch.targets).losses
    row = {k: round(float(v.detach()), 6) for k, v in losses.items()}
    row["train_step_ms"] = round(1e3 * seconds(step, device, repeats), 2)
    row["proposal_ms"] = round(1e3 * seconds(propose, device, repeats), 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco128"))
    parser.add_argument("--preset", default="effnet-lite0-fpn")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=384, help="shorter side, px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    index = read_dataset(args.data, split="train2017")
    dataset = DetectionDataset(index, train_transforms(args.size, args.size * 5 // 3, 0.5), seed=0)
    batch = collate([dataset[i] for i in range(args.batch_size)]).to(device)
    cases = {
        "vanilla RPN": (args.preset, None),
        "cascade, deform_conv2d": (f"{args.preset}-cascade", "deform_conv2d"),
        "cascade, sampled_conv2d": (f"{args.preset}-cascade", "sampled"),
    }
    rows = {}
    for label, (name, adaptive) in cases.items():
        rows[label] = measure(model_for(name, adaptive, device), batch, device, args.repeats)
        print(label, rows[label], flush=True)
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    meta.update(batch_size=args.batch_size, size=args.size, preset=args.preset)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
