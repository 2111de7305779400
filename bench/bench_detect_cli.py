"""The ``rpnkit detect`` command on a folder of JPEGs, as a user runs it (a new process,
results JSON written), against the model alone on the same batches already on the device
(``bench_pipeline.inference_rates``):

    PYTHONPATH=src python bench/bench_detect_cli.py --data ../shared/data/coco128

Each checkpoint (random weights, frozen norms calibrated: bench_pipeline's ``build``) runs on
two folders of COCO128's photographs (symbolic links: ``--copies`` small and large); the
steady rate is the difference in images over the difference in wall time, so that start-up
(the interpreter, CUDA, loading, the workers, cuDNN's first plans) cancels out and is
reported apart, as the small folder's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_pipeline import build, inference_rates

from rpnkit.data import read_dataset
from rpnkit.engine.checkpoint import save_model
from rpnkit.engine.runtime import load


def folder_of(files: list[str], copies: int, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for f in files:
            link = where / f"{k}_{Path(f).name}"
            if not link.exists():
                link.symlink_to(Path(f).resolve())
    return where


def run_detect(folder: Path, checkpoint: Path, amp: str, batch: int, out: Path) -> float:
    command = [sys.executable, "-m", "rpnkit", "detect", str(folder), "--checkpoint",
               str(checkpoint), "--amp", amp, "--batch-size", str(batch), "--out", str(out),
               "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--amps", default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--copies", default="1,60", help="small,large folder: copies of COCO128")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/bench_detect_cli"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    index = read_dataset(args.data, split="train2017")
    files = sorted(str(r.path) for r in index.records)
    small, large = (int(c) for c in args.copies.split(","))
    folders = {n: folder_of(files, n, args.runs / f"x{n}") for n in (small, large)}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    for backbone in args.backbones.split(","):
        model, spec = build(backbone, "frcnn", len(index.class_names), "cpu", channels_last=False)
        checkpoint = save_model(args.runs / f"{backbone}.safetensors", model, spec)
        for amp in args.amps.split(","):
            runtime = load(checkpoint, device, amp=amp)
            rates = inference_rates(runtime, files, args.batch_size, 10, 20, device)
            del runtime
            torch.cuda.empty_cache()
            seconds = {n: run_detect(folders[n], checkpoint, amp, args.batch_size,
                                     args.runs / "out.json") for n in (small, large)}  # fmt: skip
            rate = (large - small) * len(files) / (seconds[large] - seconds[small])
            row = {"backbone": backbone, "amp": amp, **rates,
                   "detect_images_per_s": round(rate, 1),
                   "ratio": round(rate / rates["model_images_per_s"], 3),
                   "ratio_first_batch": round(rate / rates["model_images_per_s_first_batch"], 3),
                   "seconds": {f"{n * len(files)} images": round(t, 2) for n, t in seconds.items()},
                   "results": len(json.loads((args.runs / "out.json").read_text()))}  # fmt: skip
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
