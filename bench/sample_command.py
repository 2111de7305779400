"""Where an ``rpnkit`` command's threads spend their time: the command run in this process
while a sampling thread records, every ``--interval`` ms, each other thread's stack (its
innermost frames), and the GPU's utilisation (nvidia-smi) over the run.

    PYTHONPATH=src python bench/sample_command.py --top 25 -- \\
        detect /tmp/bench_detect_cli/x60 --checkpoint /tmp/bench_detect_cli/effnet.safetensors \\
        --amp bf16 --no-progress --out /tmp/d.json

Per thread: the share of samples in each innermost frame (``file:function:line``) and in each
of the frames' callers two levels up, so that a wait (``queue.get``, ``Event.wait``) shows
what waited. A sampler holds the GIL while it reads the stacks: at 5 ms the cost is a few
per cent of the launching thread's time.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from pathlib import Path

from bench_pipeline import GpuUtilisation

from rpnkit.cli import main as rpnkit_main


def where(frame, depth: int) -> str:
    parts = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{Path(code.co_filename).name}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(parts)


class Sampler:
    def __init__(self, interval: float, depth: int) -> None:
        self.interval, self.depth = interval, depth
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        own = threading.get_ident()
        while not self.stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident != own:
                    self.counts[names.get(ident, str(ident))][where(frame, self.depth)] += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def report(self, top: int) -> dict:
        out = {}
        for name, counts in self.counts.items():
            total = sum(counts.values())
            out[name] = {
                "samples": total,
                "top": [(round(c / total, 3), k) for k, c in counts.most_common(top)],
            }
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="milliseconds")
    parser.add_argument("--depth", type=int, default=3, help="frames per sample")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    with GpuUtilisation() as gpu, Sampler(args.interval / 1e3, args.depth) as sampler:
        code = rpnkit_main(command)
    report = {"command": command, "code": code, "seconds": round(time.perf_counter() - start, 2),
              "gpu_util": gpu.mean, "threads": sampler.report(args.top)}  # fmt: skip
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
