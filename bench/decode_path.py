"""What the data path alone can feed at inference (no model): where ``detect``'s and
``propose``'s images/s stop when the model is fast.

    PYTHONPATH=src python bench/decode_path.py --data ../shared/data/coco128

- ``nvjpeg``: ``decode_jpeg(..., device="cuda")`` on batches of COCO128's files, the GPU
  otherwise idle: wall and this thread's CPU milliseconds per batch (CPU time close to the
  wall means the decoding runs on the host, not on the GPU's JPEG engines);
- ``cpu_decode``: one image decoded on one core (torchvision's libjpeg-turbo; Pillow):
  milliseconds per image, what a worker pays per image when the workers decode;
- ``batch_to``: ``Batch.to(device)`` of collated batches, inline: the decoding plus turning,
  resizing and padding on the GPU (``EncodedImages.decode``), wall and CPU ms per batch (CUDA
  only: on the CPU the workers decode, and the copy is nothing);
- ``stream``: the runner's own stream (DataLoader, pinning, the prefetching thread) with
  nothing consuming it but a synchronisation at the end: images/s, per ``--workers``, with
  the GPU decoding and with the workers decoding; with ``--png`` also of COCO128 saved as
  PNG (the workers decode it; with ``device``, the GPU resizes it).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_pipeline import as_png, build
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from rpnkit.data import collate, read_dataset
from rpnkit.engine.checkpoint import save_model
from rpnkit.engine.runtime import load
from rpnkit.engine.streaming import DevicePrefetcher

warnings.simplefilter("ignore", DeprecationWarning)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clocked(fn, repeats: int, device) -> tuple[float, float]:
    """(wall ms, this thread's CPU ms) per call of ``fn``, the device synchronised around."""
    sync(device)
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(repeats):
        fn()
    sync(device)
    return (
        (time.perf_counter() - wall) / repeats * 1e3,
        (time.thread_time() - cpu) / repeats * 1e3,
    )


def nvjpeg(encoded: list, batch_size: int, device) -> dict:
    batches = [encoded[k : k + batch_size] for k in range(0, len(encoded), batch_size)]
    state = {"k": 0}

    def one():
        decode_jpeg(batches[state["k"] % len(batches)], mode=ImageReadMode.RGB, device=device)
        state["k"] += 1

    clocked(one, len(batches), device)  # set-up
    out = {}
    for size in (1, batch_size, 4 * batch_size):
        batches = [encoded[k : k + size] for k in range(0, len(encoded), size)]
        wall, cpu = clocked(one, 2 * len(batches), device)
        out[f"batch_{size}"] = {"wall_ms": round(wall, 2), "cpu_ms": round(cpu, 2),
                                "images_per_s": round(size / wall * 1e3, 1)}  # fmt: skip
    return out


def cpu_decode(encoded: list) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    for data in encoded:
        decode_jpeg(data, mode=ImageReadMode.RGB)
    turbo = (time.perf_counter() - start) / len(encoded) * 1e3
    start = time.perf_counter()
    for data in encoded:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            np.asarray(img.convert("RGB"))
    pil = (time.perf_counter() - start) / len(encoded) * 1e3
    return {"torchvision_ms_per_image": round(turbo, 2), "pillow_ms_per_image": round(pil, 2)}


def batch_to(runtime, files: list[str], batch_size: int, device) -> dict:
    dataset = runtime.dataset(files)
    batches = [collate([dataset[i] for i in range(k, min(k + batch_size, len(files)))])
               for k in range(0, len(files), batch_size)]  # fmt: skip
    state = {"k": 0}

    def one():
        batches[state["k"] % len(batches)].to(device)
        state["k"] += 1

    clocked(one, len(batches), device)
    wall, cpu = clocked(one, 2 * len(batches), device)
    return {"wall_ms": round(wall, 2), "cpu_ms": round(cpu, 2),
            "images_per_s": round(batch_size / wall * 1e3, 1)}  # fmt: skip


def stream(runtime, files: list[str], batch_size: int, workers: int, device) -> float:
    loader = DataLoader(runtime.dataset(files), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda")  # fmt: skip
    decoding = runtime.decode_on_device
    batches = iter(DevicePrefetcher(iter(loader), device, threaded=decoding))
    next(batches)
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += len(batch.meta)
    sync(device)
    return round(count / (time.perf_counter() - start), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="4,8")
    parser.add_argument("--copies", type=int, default=8, help="passes over COCO128 per stream")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/decode_path"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--png", action="store_true", help="the streams of PNG copies too")
    args = parser.parse_args()
    device = torch.device(args.device)
    index = read_dataset(args.data, split="train2017")
    files = sorted(str(r.path) for r in index.records)
    encoded = [read_file(f) for f in files]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "torch": torch.__version__}
    report["nvjpeg"] = nvjpeg(encoded, args.batch_size, device)
    print(json.dumps(report), flush=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    model, spec = build("effnet", "frcnn", len(index.class_names), "cpu", channels_last=False)
    runtime = load(save_model(args.runs / "effnet.safetensors", model, spec), device)
    report["batch_to"] = batch_to(runtime, files, args.batch_size, device)
    print(json.dumps(report["batch_to"]), flush=True)
    sources = {"": files}
    if args.png:  # the same photographs as PNG: decoded by the workers, resized on the device
        sources["png_"] = as_png(files, args.runs / "png")
    for kind, paths in sources.items():
        for decode in ("device", "workers"):
            runtime.decode_on_device = decode == "device"
            for workers in map(int, args.workers.split(",")):
                rate = stream(runtime, paths * args.copies, args.batch_size, workers, device)
                report[f"stream_{kind}{decode}_{workers}_workers_images_per_s"] = rate
                print(kind, decode, workers, rate, flush=True)
    report["cpu_decode"] = cpu_decode(encoded)
    print(json.dumps(report["cpu_decode"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
