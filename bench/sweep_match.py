"""Launch configurations of the Triton matcher, timed on the benchmark's batch-8 and 1,000-GT
problems and checked against the PyTorch path.

    PYTHONPATH=src python bench/sweep_match.py
"""

import functools
import itertools
import statistics

import torch

from rpnkit.modeling.anchors import AnchorConfig, AnchorGenerator
from rpnkit.modeling.kernels.match_triton import match_triton
from rpnkit.modeling.matching import Matcher
from rpnkit.modeling.structures import GroundTruth


def scene(counts, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 600
        boxes.append(torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 300 + 16], 1))
    return GroundTruth.from_lists(boxes).to("cuda")


def median_ms(fn, reps=30):
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def main():
    anchors = AnchorGenerator(AnchorConfig.pyramid())(
        [(832 // s, 1344 // s) for s in (4, 8, 16, 32, 64)], device="cuda"
    )
    problems = {"b8": scene([3, 20, 7, 12, 15, 9, 4, 18], 0), "1000gt": scene([1000], 1)}
    for name, gt in problems.items():
        real, crowd = gt.mask & ~gt.ignore, gt.mask & gt.ignore
        ref = Matcher()._match_chunked(anchors, gt.boxes, real, crowd)
        for ba, nw in itertools.product((128, 256, 512, 1024), (1, 2, 4, 8)):
            try:
                out = match_triton(anchors, gt.boxes, real, crowd, 0.5, block_a=ba, num_warps=nw)
                ok = all(torch.equal(a, b) for a, b in zip(out, ref))
                call = functools.partial(
                    match_triton,
                    anchors,
                    gt.boxes,
                    real,
                    crowd,
                    0.5,
                    block_a=ba,
                    num_warps=nw,
                )
                ms = median_ms(call)
                print(
                    f"{name:7s} BA={ba:4d} warps={nw}  {ms:8.3f} ms  equal={ok}",
                    flush=True,
                )
            except Exception as err:
                print(f"{name} BA={ba} warps={nw} failed: {str(err)[:80]}")


if __name__ == "__main__":
    main()
