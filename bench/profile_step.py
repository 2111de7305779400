"""Where a Faster R-CNN training step spends the GPU's time, per backbone and memory layout:
the step rate, the body's share (its forward and backward alone), and torch.profiler's kernels
grouped by kind (depthwise and dense convolutions, their backward, element-wise, GEMM, ...).

    PYTHONPATH=src python bench/profile_step.py --data ../shared/data/coco128 --out prof/

Random weights, frozen norms calibrated (bench_pipeline's ``build``); one COCO128 batch at
800x1333 already on the device, the Trainer's own step, as bench_pipeline's ``model`` case.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch
from bench_pipeline import build, train_config
from torch.profiler import ProfilerActivity, profile

from rpnkit.data import DetectionDataset, collate, read_dataset, train_transforms
from rpnkit.engine.trainer import Trainer

# (kind, substrings of a kernel's name), first match wins
KINDS = (
    ("depthwise conv", ("depthwise", "dwconv", "DepthwiseConv", "conv_depthwise")),
    ("conv backward (dgrad/wgrad)", ("dgrad", "wgrad", "Dgrad", "Wgrad", "bwd")),
    ("conv forward", ("fprop", "conv", "Conv", "implicit", "xmma", "cudnn")),
    ("gemm", ("gemm", "Gemm", "nvjet", "cutlass", "matmul")),
    ("roi align", ("roi_align", "RoIAlign")),
    ("triton (nms, matching, ...)", ("triton",)),
    ("reduction", ("reduce", "Reduce")),
    ("layout / copy", ("copy", "Copy", "nchwToNhwc", "nhwcToNchw", "transpose", "cat")),
    ("element-wise", ("elementwise", "Elementwise", "vectorized", "unrolled", "foreach")),
)


def kind_of(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def sync_time(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def step_rate(trainer: Trainer, batch, steps: int, device) -> float:
    """ms per training step."""
    for i in range(5):
        trainer._step(batch, i)
    start = sync_time(device)
    for i in range(steps):
        trainer._step(batch, i)
    return (sync_time(device) - start) / steps * 1e3


def body_rate(model, batch, amp_dtype, steps: int, device) -> dict:
    """ms for the backbone body's forward and backward alone (and with the FPN)."""
    first = getattr(model, "first_stage", model)
    x = batch.images.float().div(255)
    if first.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = {}
    for name, net in (("body", first.backbone.body), ("body+fpn", first.backbone)):

        def run(net=net):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                feats = net(x)
                feats = feats.values() if isinstance(feats, dict) else feats
                loss = sum(f.float().mean() for f in feats)
            loss.backward()

        for _ in range(3):
            run()
        start = sync_time(device)
        for _ in range(steps):
            run()
        out[name] = round((sync_time(device) - start) / steps * 1e3, 2)
    first.zero_grad(set_to_none=True)
    return out


def kernel_table(trainer: Trainer, batch, steps: int, device) -> tuple[dict, list]:
    """GPU time per step by kind of kernel, and the 30 kernels that take the most (on a CPU
    run, the operators: that only checks the code)."""
    on_gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            trainer._step(batch, i)
        sync_time(device)
    where = "CUDA" if on_gpu else "CPU"
    kernels = [e for e in prof.key_averages() if e.device_type.name == where]

    def ms(e) -> float:
        return (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3 / steps

    by_kind: dict[str, float] = collections.defaultdict(float)
    for e in kernels:
        by_kind[kind_of(e.key)] += ms(e)
    top = sorted(kernels, key=ms, reverse=True)[:30]
    rows = [
        {"ms_per_step": round(ms(e), 3), "calls_per_step": e.count // steps,
         "kind": kind_of(e.key), "kernel": e.key[:140]}
        for e in top
    ]  # fmt: skip
    return {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}, rows


class _Scaled(torch.nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.view(-1, 1, 1, 1))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale.to(weight.dtype)


def fold_frozen_norms(backbone: torch.nn.Module, probe: torch.Tensor) -> int:
    """Fold each frozen batch norm into the convolution before it, for training: the conv runs
    with ``weight * scale`` (a parametrization, so a trainable weight keeps its gradient) and
    bias ``shift``; the norm becomes an identity. The same function, one pass less per layer."""
    from torch.nn.utils import parametrize

    from rpnkit.modeling.backbones.fold import _affine, _conv_norm_pairs

    with torch.no_grad():
        pairs, _ = _conv_norm_pairs(backbone, probe)
        parents = {id(c): (p, n) for p in backbone.modules() for n, c in p.named_children()}
        for conv, norm in {id(n): (c, n) for c, n in pairs}.values():
            scale, shift = (t.detach().clone() for t in _affine(norm))
            if conv.bias is not None:
                shift = shift + conv.bias.detach() * scale
            del conv.bias
            conv.register_buffer("bias", shift)
            parametrize.register_parametrization(conv, "weight", _Scaled(scale))
            parent, name = parents[id(norm)]
            setattr(parent, name, torch.nn.Identity())
    return len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument(
        "--variants",
        default="first,last,first+fold,last+fold",
        help="first, last (channels); +fold (frozen norms folded), +compile (the body compiled), "
        "+s4 (effnet's blocks through stride 4 frozen too, as R50-FPN's preset freezes its stem "
        "and layer1: no backward at strides 2-4)",
    )
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/profile_step"))
    parser.add_argument("--out", type=Path, default=Path("profile_step"))
    parser.add_argument("--size", type=int, default=800, help="short side, px")
    parser.add_argument("--device", default="cuda", help="cuda (a CPU run only checks the code)")
    args = parser.parse_args()
    device = torch.device(args.device)
    index = read_dataset(args.data, split="train2017")
    dataset = DetectionDataset(index, train_transforms(args.size, args.size * 5 // 3, 0.5))
    batch = collate([dataset[i] for i in range(args.batch_size)]).to(device)
    amp_dtype = {"bf16": torch.bfloat16}.get(args.amp)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    for backbone in args.backbones.split(","):
        for variant in args.variants.split(","):
            flags = set(variant.split("+"))
            model, spec = build(backbone, "frcnn", len(index.class_names), "cpu",
                                channels_last="last" in flags)  # fmt: skip
            first = model.first_stage
            if "fold" in flags:
                fold_frozen_norms(first.backbone.body, torch.rand(1, 3, 128, 128))
            if "s4" in flags and backbone == "effnet":  # R50-FPN's preset already is
                first.backbone.body.net._blocks[:3].requires_grad_(False)
            if "compile" in flags:
                first.backbone.body.compile()
            model.to(device)
            args.layout = "last" if "last" in flags else "first"
            config = train_config(args, args.amp, 10**6)
            trainer = Trainer(
                model, dataset, config, out_dir=args.runs, spec=spec, device=device, progress=False
            )
            trainer._set_up()
            row = {"backbone": backbone, "variant": variant, "amp": args.amp}
            row["step_ms"] = round(step_rate(trainer, batch, args.steps, device), 2)
            row["images_per_s"] = round(args.batch_size / row["step_ms"] * 1e3, 1)
            row.update(body_rate(model, batch, amp_dtype, args.steps, device))
            row["by_kind_ms"], top = kernel_table(trainer, batch, 2, device)
            trainer.watch.flush()
            print(json.dumps(row), flush=True)
            name = f"{backbone}-{variant.replace('+', '_')}-{args.amp}"
            (args.out / f"{name}-kernels.json").write_text(json.dumps(top, indent=1) + "\n")
            results["rows"].append(row)
            del trainer, model
            torch.cuda.empty_cache()
    (args.out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
