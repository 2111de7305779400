"""Where ``detect``'s time goes on the GPU: torch.profiler over rpnkit's default pipeline
(``Predictor.iter_detections`` on COCO128's files, the results written as the command writes
them), with the GPU's idle time attributed to what the launching thread was doing then.

    PYTHONPATH=src python bench/profile_detect.py --data ../shared/data/coco128

For each backbone: one untimed pass (cuDNN's plans, nvJPEG), then one profiled pass, read
from its Chrome trace (kept with ``--trace-dir``). Reported per batch: the GPU's kernel time
per stream (the model's, the decoding side stream's, nvJPEG's own), the launching thread's
time by label (``detect.forward``: launching the model; ``detect.wait``: waiting for the
previous batch's outputs; ``detect.write``: writing results; ``other``: the loop itself, the
queue, the progress bar) with the GPU's idle time during each, and the synchronising CUDA
calls per thread; and torch.profiler's own table. The profiler slows the host, so the rates
here are not the pipeline's (bench_pipeline.py measures those).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch
from bench_pipeline import build
from torch.profiler import ProfilerActivity, profile, record_function

from rpnkit.data import Batch, read_dataset
from rpnkit.engine import streaming
from rpnkit.engine.checkpoint import save_model
from rpnkit.engine.runtime import load
from rpnkit.engine.writing import CocoResultsWriter

LABELS = ("detect.forward", "detect.wait", "detect.write", "detect.to_device")
SYNCS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize", "cudaMemcpy")


@contextlib.contextmanager
def labelled(runtime):
    """The pipeline's steps wrapped in ``record_function`` labels while the context lasts."""
    net = runtime.network
    originals = (streaming.HostCopy.get, Batch.to, CocoResultsWriter.add)

    def wrap(fn, label):
        def wrapped(*a, **k):
            with record_function(label):
                return fn(*a, **k)

        return wrapped

    net.forward = wrap(net.forward, "detect.forward")
    streaming.HostCopy.get = wrap(originals[0], "detect.wait")
    Batch.to = wrap(originals[1], "detect.to_device")
    CocoResultsWriter.add = wrap(originals[2], "detect.write")
    try:
        yield
    finally:
        del net.forward
        streaming.HostCopy.get, Batch.to, CocoResultsWriter.add = originals


def merged(intervals: list[tuple[float, float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def idle_within(busy: list[list[float]], a: float, b: float) -> float:
    """How long the GPU had nothing running between host times ``a`` and ``b`` (us)."""
    i = max(0, bisect.bisect_right([x for x, _ in busy], a) - 1)
    idle = b - a
    for x, y in busy[i:]:
        if x >= b:
            break
        idle -= max(0.0, min(y, b) - max(x, a))
    return idle


def analyse(trace: dict) -> dict:
    """The exported Chrome trace (its thread ids are the system's: torch.profiler's events
    give the prefetching thread's CUDA calls the launching thread's id) -> the GPU's busy
    share, its kernel time per stream, the launching thread's time per label with the GPU's
    idle time during it, and the synchronising CUDA calls per thread."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    busy = merged([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    span = busy[-1][1] - busy[0][0]
    per_stream = Counter()
    for e in gpu:
        per_stream[str(e["args"].get("stream"))] += e["dur"]
    labels = sorted((e for e in events if e.get("cat") == "user_annotation"
                     and e["name"] in LABELS), key=lambda e: e["ts"])  # fmt: skip
    main = Counter(e["tid"] for e in labels if e["name"] == "detect.forward").most_common(1)[0][0]
    host, idle, last_end = defaultdict(float), defaultdict(float), None
    for e in (e for e in labels if e["tid"] == main):
        if last_end is not None and e["ts"] > last_end:  # between labels: the loop itself
            host["other"] += e["ts"] - last_end
            idle["other"] += idle_within(busy, last_end, e["ts"])
        host[e["name"]] += e["dur"]
        idle[e["name"]] += idle_within(busy, e["ts"], e["ts"] + e["dur"])
        last_end = e["ts"] + e["dur"]
    syncs = defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("cat") == "cuda_runtime" and e["name"] in SYNCS:
            key = f"{e['name']} ({'launching thread' if e['tid'] == main else 'other thread'})"
            syncs[key][0] += 1
            syncs[key][1] += e["dur"]
    batches = sum(1 for e in labels if e["name"] == "detect.forward" and e["tid"] == main)
    return {
        "batches": batches,
        "gpu_span_ms": round(span / 1e3, 1),
        "gpu_busy_share": round(sum(b - a for a, b in busy) / span, 3),
        "gpu_ms_per_batch_by_stream": {
            k: round(v / 1e3 / batches, 2) for k, v in per_stream.most_common()
        },
        "launching_thread_ms_per_batch": {k: round(v / 1e3 / batches, 2) for k, v in host.items()},
        "gpu_idle_ms_per_batch_during": {k: round(v / 1e3 / batches, 2) for k, v in idle.items()},
        "syncs": {k: {"calls": n, "ms": round(t / 1e3, 1)} for k, (n, t) in syncs.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--trace-dir", type=Path, default=None, help="chrome traces here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    index = read_dataset(args.data, split="train2017")
    files = sorted(str(r.path) for r in index.records)
    runs = Path(tempfile.mkdtemp(prefix="profile_detect_"))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    for backbone in args.backbones.split(","):
        model, spec = build(backbone, "frcnn", len(index.class_names), "cpu", channels_last=False)
        runtime = load(save_model(runs / f"{backbone}.safetensors", model, spec), device,
                       amp=args.amp)  # fmt: skip

        def one_pass(out: Path, runtime=runtime) -> None:
            with CocoResultsWriter(out, background=True) as writer:
                for result in runtime.iter_detections(files, batch_size=args.batch_size):
                    writer.add(result)
            torch.cuda.synchronize()

        one_pass(runs / "warm.json")
        with (
            labelled(runtime),
            profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof,
        ):
            one_pass(runs / "profiled.json")
        trace = (args.trace_dir or runs) / f"detect-{backbone}.json"
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
        row = {"backbone": backbone, "amp": args.amp, **analyse(json.loads(trace.read_text()))}
        print(json.dumps(row), flush=True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
        report["rows"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
