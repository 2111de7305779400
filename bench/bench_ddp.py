"""One GPU against two: `rpnkit train` under torchrun at the same per-GPU batch, images/s in the
steady state (read from train_log.csv, start-up excluded) and the ratio.

    PYTHONPATH=src python bench/bench_ddp.py --data ../shared/data/coco128 --json out.json

Each run is the real command line, ``torchrun --standalone --nproc_per_node N -m rpnkit train``
on COCO128's training images (random-initialised backbone unless ``--weights imagenet`` is
available); throughput between two logged steps is images / seconds between them, from the
log's cumulative images/s (images seen = (step + 1) x batch x N).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path


def steady_rate(log: Path, batch: int, world: int, skip: int) -> float:
    rows = [r for r in csv.DictReader(log.open()) if int(r["step"]) >= skip]
    first, last = rows[0], rows[-1]

    def seen_and_elapsed(row):
        seen = int(row["step"]) * batch * world  # steps done
        return seen, seen / float(row["images_per_s"])

    (a, ta), (b, tb) = seen_and_elapsed(first), seen_and_elapsed(last)
    return (b - a) / (tb - ta)


def run(args, gpus: int) -> dict:
    out = Path(args.runs) / f"g{gpus}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={gpus}", "-m", "rpnkit", "train", "--data", args.data,
               "--split", "train2017", "--preset", args.preset, "--model", args.model,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--amp", args.amp, "--workers", str(args.workers), "--log-every",
               str(args.log_every), "--warmup", "20", "--lr", "0.01", "--grad-clip", "10",
               "--checkpoint-every", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    if args.weights:
        command += ["--weights", args.weights]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{gpus} GPU(s) failed:\n{done.stderr[-3000:]}")
    rate = steady_rate(out / "train_log.csv", args.batch_size, gpus, args.skip)
    return {"gpus": gpus, "images_per_s": round(rate, 1), "stdout": done.stdout[-400:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="effnet-lite0-fpn")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--model", default="faster-rcnn")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--skip", type=int, default=50, help="steps left out as start-up")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--workers", type=int, default=6, help="per process")
    parser.add_argument("--runs", default="/tmp/bench_ddp")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [run(args, 1), run(args, 2)]
    result = {"rows": rows, "speedup": round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 3)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
