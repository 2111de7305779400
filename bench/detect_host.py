"""Two ways to spend less host time per ``detect`` batch, measured against rpnkit's default
pipeline (bench_pipeline's ``detect_rate``: images/s, GPU busy, host ms per batch):

- ``cast``: the convolutions' and linear layers' weights held in bf16 for the run, so that
  autocast no longer casts every one of them at every batch (R50-FPN's Faster R-CNN: 129
  casts per batch, torch.profiler in profile_detect.py);
- ``nopin``: no page-locking of batches whose JPEGs the GPU decodes (the DataLoader's pinning
  thread gone: the batches carry encoded bytes, a few hundred kB).

    PYTHONPATH=src python bench/detect_host.py --data ../shared/data/coco128

Variants run in turn, twice (ABCDABCD), after an untimed pass; ``identical`` says whether the
cast run's detections equal the default's on one batch, bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from bench_pipeline import build, detect_rate, inference_rates
from torch import nn

from rpnkit.data import read_dataset
from rpnkit.engine import runner
from rpnkit.engine.checkpoint import save_model
from rpnkit.engine.runtime import load


@contextlib.contextmanager
def weights_cast(net: nn.Module, dtype: torch.dtype, on: bool):
    saved = {}
    if on:
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                saved[m] = (m.weight, m.bias)
                m.weight = nn.Parameter(m.weight.detach().to(dtype), requires_grad=False)
                if m.bias is not None:
                    m.bias = nn.Parameter(m.bias.detach().to(dtype), requires_grad=False)
    try:
        yield
    finally:
        for m, (w, b) in saved.items():
            m.weight, m.bias = w, b


@contextlib.contextmanager
def pinning(on: bool):
    original = runner.DataLoader
    if not on:

        def unpinned(*a, **k):
            return original(*a, **{**k, "pin_memory": False})

        runner.DataLoader = unpinned
    try:
        yield
    finally:
        runner.DataLoader = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/detect_host"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    index = read_dataset(args.data, split="train2017")
    files = sorted(str(r.path) for r in index.records)
    args.runs.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    variants = {"default": (False, True), "cast": (True, True), "nopin": (False, False),
                "cast+nopin": (True, False)}  # fmt: skip
    for backbone in args.backbones.split(","):
        model, spec = build(backbone, "frcnn", len(index.class_names), "cpu", channels_last=False)
        path = save_model(args.runs / f"{backbone}.safetensors", model, spec)
        runtime = load(path, device, amp="bf16", num_workers=args.workers)
        net = runtime.network
        row = {"backbone": backbone, "amp": "bf16"}
        row.update(inference_rates(runtime, files, args.batch_size, 10, 20, device))
        with weights_cast(net, torch.bfloat16, True):
            cast_rates = inference_rates(runtime, files, args.batch_size, 10, 20, device)
            row["model_images_per_s_cast"] = cast_rates["model_images_per_s"]
            cast = runtime.detect(files[: args.batch_size], batch_size=args.batch_size)
        plain = runtime.detect(files[: args.batch_size], batch_size=args.batch_size)
        row["identical"] = all(torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
                               for a, b in zip(plain, cast))  # fmt: skip
        for _ in runtime.iter_detections(files, batch_size=args.batch_size):
            pass  # every padded size met once
        for repeat in range(2):
            for name, (cast_on, pin_on) in variants.items():
                with weights_cast(net, torch.bfloat16, cast_on), pinning(pin_on):
                    row[f"{name}#{repeat}"] = detect_rate(args, runtime, files, device)
                print(name, repeat, row[f"{name}#{repeat}"], flush=True)
        print(json.dumps(row), flush=True)
        report["rows"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
