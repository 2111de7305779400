"""The ``rpnkit detect`` (or ``propose``) command on a folder of JPEGs, as a user runs it (a
new process, results JSON written), against the model alone on the same batches already on
the device (``bench_pipeline.inference_rates``):

    PYTHONPATH=src python bench/bench_detect_cli.py --data ../shared/data/coco128
    PYTHONPATH=src python bench/bench_detect_cli.py --command propose --tops 100,1000
    PYTHONPATH=src python bench/bench_detect_cli.py --format png  # workers decode, GPU resizes
    PYTHONPATH=src python bench/bench_detect_cli.py --extra "--labels {runs}/labels"  # + labels

Each checkpoint (random weights, frozen norms calibrated: bench_pipeline's ``build``) runs on
two folders of COCO128's photographs (symbolic links: ``--copies`` small and large); the
steady rate is the difference in images over the difference in wall time, so that start-up
(the interpreter, CUDA, loading, the workers, cuDNN's first plans) cancels out and is
reported apart, as the small folder's time. Start-up varies by seconds from run to run
(12.9-17.3 s for the small folder on the H200 host, session 11), which moves the rate by up to
10 %: each folder runs ``--repeats`` times and the fastest counts. The command also says its
own rate, from its first results to its file in place (``ratio_said``: the best run's on the
large folder), and how long its first results took after loading.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_pipeline import as_png, build, inference_rates

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


def run_command(args, folder: Path, checkpoint: Path, amp: str, top: int | None) -> dict:
    """The command's wall time, and its own summary's first-results time and steady rate."""
    command = [sys.executable, "-m", "rpnkit", args.command, str(folder), "--checkpoint",
               str(checkpoint), "--amp", amp, "--batch-size", str(args.batch_size), "--out",
               str(args.runs / "out.json"), "--no-progress"]  # fmt: skip
    command += ["--top", str(top)] if top is not None else []
    command += shlex.split(args.extra.format(runs=args.runs)) if args.extra else []
    shutil.rmtree(args.runs / "labels", ignore_errors=True)  # a run's labels: not the next's
    start = time.perf_counter()
    ran = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - start
    if ran.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} ended with {ran.returncode}: {ran.stderr}")
    said = re.search(r"first results after ([\d.]+) s, then ([\d.]+) images/s", ran.stdout)
    if said is None:
        raise RuntimeError(f"no rate in the command's summary: {ran.stdout!r}")
    return {"wall": wall, "first": float(said[1]), "steady": float(said[2])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--command", choices=["detect", "propose"], default="detect")
    parser.add_argument("--tops", default="100", help="propose: --top values")
    parser.add_argument(
        "--format", choices=["jpeg", "png"], default="jpeg", help="png: COCO128 saved as PNG"
    )
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--amps", default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--copies", default="1,60", help="small,large folder: copies of COCO128")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per folder, the fastest kept (start-up varies)"
    )
    parser.add_argument("--runs", type=Path, default=Path("/tmp/bench_detect_cli"))
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--extra", default="", help="more options of the command ({runs}: the --runs folder)"
    )
    parser.add_argument(
        "--device",
        default="cuda",
        help="the model-only rate's (the command's own default decides its)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    index = read_dataset(args.data, split="train2017")
    files = sorted(str(r.path) for r in index.records)
    if args.format == "png":
        files = as_png(files, args.runs / "png")
    copies = tuple(int(c) for c in args.copies.split(","))
    folders = {n: folder_of(files, n, args.runs / f"x{n}-{args.format}") for n in copies}
    tops = [int(t) for t in args.tops.split(",")] if args.command == "propose" else [None]
    kind = "frcnn" if args.command == "detect" else "rpn"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {"device": name, "torch": torch.__version__, "format": args.format,
               "extra": args.extra, "rows": []}  # fmt: skip
    for backbone in args.backbones.split(","):
        model, spec = build(backbone, kind, len(index.class_names), "cpu", channels_last=False)
        checkpoint = save_model(args.runs / f"{backbone}.safetensors", model, spec)
        for amp in args.amps.split(","):
            runtime = load(checkpoint, device, amp=amp)
            rates = inference_rates(runtime, files, args.batch_size, 10, 20, device)
            del runtime
            torch.cuda.empty_cache()
            for top in tops:
                row = {"backbone": backbone, "amp": amp, **({"top": top} if top else {}), **rates}
                row.update(command_rate(args, folders, checkpoint, amp, top, rates, len(files)))
                print(json.dumps(row), flush=True)
                results["rows"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def command_rate(args, folders: dict, checkpoint, amp: str, top, rates: dict, n: int) -> dict:
    """The command's steady images/s from the small and the large folder's wall times."""
    (small, a), (large, b) = sorted(folders.items())
    runs = {c: [run_command(args, folder, checkpoint, amp, top) for _ in range(args.repeats)]
            for c, folder in ((small, a), (large, b))}  # fmt: skip
    seconds = {c: min(r["wall"] for r in rs) for c, rs in runs.items()}
    rate = (large - small) * n / (seconds[large] - seconds[small])
    steady = max(r["steady"] for r in runs[large])  # the command's own, first results on
    model = rates["model_images_per_s"]
    return {
        f"{args.command}_images_per_s": round(rate, 1),
        "ratio": round(rate / model, 3),
        "ratio_first_batch": round(rate / rates["model_images_per_s_first_batch"], 3),
        "said_steady_images_per_s": [r["steady"] for r in runs[large]],
        "ratio_said": round(steady / model, 3),
        "said_first_results_s": [r["first"] for rs in runs.values() for r in rs],
        "seconds": {f"{c * n} images": round(t, 2) for c, t in seconds.items()},
        "results": len(json.loads((args.runs / "out.json").read_text())),
    }


if __name__ == "__main__":
    sys.exit(main())
