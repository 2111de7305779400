"""Where a fresh ``rpnkit detect`` process spends its start-up, by phase and by batch: importing
torch and rpnkit, starting CUDA, loading the checkpoint, then the time each batch of 8 results
is ready (the first batch also meets cuDNN's set-up for its padded size, nvJPEG's and the
workers' start), and the padded sizes met. The same library calls as the command
(``load`` + ``iter_detections``), without writing the results.

    PYTHONPATH=src python bench/detect_startup.py FOLDER CHECKPOINT [--amp bf16] [--aspect-groups]

One JSON line; run it several times (the first run on a machine also fills Triton's cache).
"""

import time

START = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

AFTER_TORCH = time.perf_counter() - START
from rpnkit.engine.runtime import load  # noqa: E402

AFTER_RPNKIT = time.perf_counter() - START


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("checkpoint")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--aspect-groups", action="store_true")
    args = parser.parse_args()
    marks = {"import torch": AFTER_TORCH, "import rpnkit": AFTER_RPNKIT}
    torch.zeros(1, device="cuda")
    marks["cuda"] = time.perf_counter() - START
    runtime = load(args.checkpoint, "cuda", amp=args.amp, group_by_aspect=args.aspect_groups)
    marks["load"] = time.perf_counter() - START
    sizes, own = [], runtime.network.forward

    def forward(images, *rest, **options):
        sizes.append("x".join(map(str, images.shape[-2:])))
        return own(images, *rest, **options)

    runtime.network.forward = forward
    ready = []
    for i, _ in enumerate(runtime.iter_detections(args.folder, batch_size=args.batch_size)):
        if i % args.batch_size == args.batch_size - 1:
            ready.append(round(time.perf_counter() - START, 2))
    marks["done"] = time.perf_counter() - START
    row = {"amp": args.amp, "aspect_groups": args.aspect_groups,
           "marks_s": {k: round(v, 2) for k, v in marks.items()}, "batch_ready_s": ready,
           "sizes": sizes, "distinct_sizes": len(set(sizes))}  # fmt: skip
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
