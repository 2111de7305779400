"""Full Faster R-CNN (R50-FPN) against torchvision's FasterRCNN, one process, same weights.

    PYTHONPATH=src python bench/bench_detector.py            # on a CUDA GPU
    PYTHONPATH=src python bench/bench_detector.py --cpu      # small images, few repetitions

Both models hold the same weights: torchvision's is built by ``rpnkit.testing`` around a copy
of rpnkit's backbone, with rpnkit's RPN head and box head copied in (random weights: no
ImageNet ResNet-50 file is available here; the class layer is scaled so that many (RoI, class)
pairs pass the 0.05 score threshold and NMS has work to do). Same settings: 1000/1000
proposals per level/image at test, 2000/2000 in training, 512 RoIs per image, 91 classes.

Cases (CUDA events, warm-up, median; the two models called in turn):
- infer: images -> detections, batch 1 and 8 at 800x1333 (true sizes vary inside the batch;
  all are fixed points of torchvision's 800/1333 resize; batches padded to multiples of 64 on
  both sides, where torchvision's anchor strides are right), fp32 and bf16 autocast. Ours takes
  the padded batch, torchvision the list of images (its transform normalises and batches).
  Check: the same detections (fp32: count per image, labels, scores to 1e-4, boxes to 0.05 px).
- backbone: the backbone alone (the same module on both sides): the floor both share.
- train: one training step (forward, backward, SGD step), batch 8, bf16 autocast and fp32,
  with 12 GT boxes per image: images/s and peak GPU memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch
from bench_rpn import ROWS, report, timeit, timeit_alternating
from torch import Tensor
from torchvision.ops import box_iou
from torchvision.ops.misc import FrozenBatchNorm2d

from rpnkit.modeling.presets import DetectorConfig, build_detector, preset_config
from rpnkit.modeling.roi_heads import RoIHeadConfig
from rpnkit.modeling.structures import GroundTruth
from rpnkit.testing import detection_rows, torchvision_faster_rcnn


class ChannelsLast(torch.nn.Module):
    """The backbone run in channels-last memory format (faster convolutions on tensor cores).
    Applied to both sides alike (``--channels-last``): it changes the shared floor only."""

    def __init__(self, body) -> None:
        super().__init__()
        self.body = body.to(memory_format=torch.channels_last)
        self.out_channels, self.strides = body.out_channels, body.strides

    def forward(self, x):
        return self.body(x.contiguous(memory_format=torch.channels_last))


def build_pair(device, seed=0, channels_last=False):
    torch.manual_seed(seed)
    model = preset_config("r50-fpn")
    # torchvision rounds its base anchors to whole pixels
    model = dataclasses.replace(
        model,
        rpn=dataclasses.replace(
            model.rpn, anchors=dataclasses.replace(model.rpn.anchors, round_base=True)
        ),
    )
    ours = build_detector(DetectorConfig(model=model, roi=RoIHeadConfig(num_classes=91)))
    with torch.no_grad():
        # A random ResNet behind identity frozen BN gives huge activations: scale each FPN
        # output conv so that its map has unit standard deviation on a random image, as a
        # trained network's roughly has. Then spread the objectness and class scores
        # (init-scale weights give near ties and no class above the 0.05 threshold).
        probe = torch.rand(1, 3, 512, 512)
        fpn = ours.backbone.fpn
        for conv in fpn.layer_blocks:
            taps = dict(zip(["c2", "c3", "c4", "c5"], ours.backbone.body(probe)))
            out = fpn(taps)
            level = list(fpn.layer_blocks).index(conv)
            scale = float(list(out.values())[level].std())
            conv[0].weight /= scale
            conv[0].bias /= scale
        for p in ours.rpn.head.parameters():
            torch.nn.init.normal_(p, std=0.05)
        torch.nn.init.normal_(ours.roi_heads.box_head.cls_score.weight, std=0.3)
    theirs = torchvision_faster_rcnn(ours)
    theirs.transform.size_divisible = 64
    if channels_last:
        ours.first_stage.backbone = ChannelsLast(ours.backbone)
        theirs.backbone.body = ChannelsLast(theirs.backbone.body)
    return ours.to(device).eval(), theirs.to(device).eval()


def sizes_for(batch, h, w):
    """True sizes that torchvision's 800/1333 resize leaves unchanged (short side 800, or long
    side 1333 with a short side below 800)."""
    out = []
    for i in range(batch):
        out.append((h, w - 64 * (i % 4)) if i % 2 == 0 else (h - 32 * (i % 3), w))
    return out


def make_images(batch, h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = sizes_for(batch, h, w)
    # padded to multiples of 64 (torchvision too, below): torchvision derives each level's
    # anchor stride as padded size // feature size, which is not 64 on P6 otherwise
    padded = torch.zeros(batch, 3, -(-h // 64) * 64, -(-w // 64) * 64)
    for i, (hh, ww) in enumerate(sizes):
        padded[i, :, :hh, :ww] = torch.rand(3, hh, ww, generator=g)
    padded = padded.to(device)
    crops = [padded[i, :, :hh, :ww].contiguous() for i, (hh, ww) in enumerate(sizes)]
    return padded, torch.tensor(sizes, device=device), crops


def same_detections(ours_dets, theirs_out, score_tol=1e-4) -> tuple[bool, str]:
    """The same (box, score, label) sets per image, in any order among equal scores."""
    worst_score, worst_box = 0.0, 0.0
    for (boxes, scores, labels), ref in zip(ours_dets.per_image(), theirs_out):
        if len(boxes) != len(ref["boxes"]):
            return False, f"{len(boxes)} detections against {len(ref['boxes'])}"
        if not len(boxes):
            continue
        a = detection_rows(boxes, scores, labels)
        b = detection_rows(ref["boxes"], ref["scores"], ref["labels"])
        if not torch.equal(a[:, 5], b[:, 5]):
            return False, "labels differ"
        worst_score = max(worst_score, float((a[:, 4] - b[:, 4]).abs().max()))
        worst_box = max(worst_box, float((a[:, :4] - b[:, :4]).abs().max()))
    ok = worst_score <= score_tol and worst_box <= 0.05
    return ok, f"max |score diff| {worst_score:.1e}, max |box diff| {worst_box:.3f} px"


def _tv_lists(out) -> list[tuple[Tensor, Tensor]]:
    return [(o["boxes"], o["labels"]) for o in out]


def _our_lists(dets) -> list[tuple[Tensor, Tensor]]:
    return [(boxes, labels) for boxes, _, labels in dets.per_image()]


def agreement(found_lists, reference_out, iou=0.9) -> str:
    """Where exact equality is not expected (bf16, folded batch norm): how many of the
    reference's (torchvision's) detections the other list has too, with the same label and
    IoU >= ``iou``. ``found_lists``: per image, (boxes, labels)."""
    found, total = 0, 0
    for (boxes, labels), ref in zip(found_lists, reference_out):
        total += len(ref["boxes"])
        if len(boxes) and len(ref["boxes"]):
            overlap = box_iou(ref["boxes"].float(), boxes.float())
            overlap[ref["labels"][:, None] != labels[None, :]] = 0
            found += int((overlap.max(1).values >= iou).sum())
    return f"{found}/{total}"


def is_folded(model) -> bool:
    """True once rpnkit's inference folded the backbone's batch norms into its convolutions."""
    norms = (FrozenBatchNorm2d, torch.nn.BatchNorm2d)
    return not any(isinstance(m, norms) for m in model.modules())


def variant(model, dtype) -> str:
    """The case's precision and model options, as printed: e.g. 'bf16 channels-last'."""
    name = "fp32" if dtype == torch.float32 else "bf16"
    if isinstance(model.backbone, ChannelsLast):
        name += " channels-last"
    if is_folded(model):
        name += " bn-folded"
    return name


def bench_infer(device, ours, theirs, batch, dtype, reps, warmup, h, w):
    folded = is_folded(ours)
    images, sizes, crops = make_images(batch, h, w, device)
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)

    @torch.no_grad()
    def run_ours():
        with torch.autocast(**autocast):
            return ours(images, sizes).detections

    @torch.no_grad()
    def run_theirs():
        with torch.autocast(**autocast):
            return theirs(crops)

    dets, ref = run_ours(), run_theirs()
    n = int(dets.num.sum())
    if dtype == torch.float32 and not folded:
        ok, detail = same_detections(dets, ref)
        check = ("same detections: " if ok else "DETECTIONS DIFFER: ") + detail
    elif dtype == torch.float32:  # folding changes rounding: near-tied scores can swap
        check = f"{agreement(_our_lists(dets), ref)} of torchvision's detections matched"
    else:
        # bf16 rounds differently on the two sides (torchvision decodes boxes in bf16, rpnkit
        # in float32): measure both against torchvision's float32 detections instead
        with torch.no_grad():
            ref32 = theirs(crops)
        check = (
            f"of torchvision's fp32 detections, ours bf16 match "
            f"{agreement(_our_lists(dets), ref32)}, torchvision's bf16 "
            f"{agreement(_tv_lists(ref), ref32)} (label, IoU >= 0.9)"
        )
    t_ours, t_theirs = timeit_alternating(
        run_ours, run_theirs, reps=reps, warmup=warmup, device=device
    )
    name = variant(ours, dtype)
    report(
        f"faster-rcnn infer b{batch} {name}",
        t_ours,
        t_theirs,
        check,
        images_per_s_ours=batch * 1e3 / t_ours,
        images_per_s_theirs=batch * 1e3 / t_theirs,
        detections=n,
    )

    @torch.no_grad()
    def run_backbone():
        with torch.autocast(**autocast):
            return ours.first_stage.features(images, sizes)

    t_bb = timeit(run_backbone, reps=reps, warmup=warmup, device=device)
    floor = "rpnkit's folded backbone" if folded else "shared by both: the floor"
    report(f"  backbone alone b{batch} {name}", t_bb, None, floor)


def random_targets(sizes, device, per_image=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for h, w in sizes.tolist():
        xy = torch.rand(per_image, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(per_image, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
        boxes.append(torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], 1))
        labels.append(torch.randint(1, 91, (per_image,), generator=g))
    gt = GroundTruth.from_lists(boxes, labels).check(sizes.cpu(), None).to(device)
    tv = [{"boxes": b.to(device), "labels": lab.to(device)} for b, lab in zip(boxes, labels)]
    return gt, tv


def bench_train(device, ours, theirs, batch, dtype, reps, warmup, h, w):
    images, sizes, crops = make_images(batch, h, w, device, seed=1)
    gt, tv_targets = random_targets(sizes, device)
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    ours.train()
    theirs.train()
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-4)
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=1e-4)

    def run_ours():
        with torch.autocast(**autocast):
            losses = ours(images, sizes, gt).losses
        loss = sum(v.float() for v in losses.values())
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def run_theirs():
        with torch.autocast(**autocast):
            losses = theirs(crops, tv_targets)
        loss = sum(v.float() for v in losses.values())
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        opt_theirs.step()

    peaks = {}
    for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
        if device.type == "cuda":
            fn()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    t_ours, t_theirs = timeit_alternating(
        run_ours, run_theirs, reps=reps, warmup=warmup, device=device
    )
    name = variant(ours, dtype)
    check = f"peak GiB ours {peaks['ours']:.2f} theirs {peaks['theirs']:.2f}" if peaks else "-"
    report(
        f"faster-rcnn train step b{batch} {name}",
        t_ours,
        t_theirs,
        check,
        images_per_s_ours=batch * 1e3 / t_ours,
        images_per_s_theirs=batch * 1e3 / t_theirs,
        peak_gib_ours=peaks.get("ours"),
        peak_gib_theirs=peaks.get("theirs"),
    )
    ours.eval()
    theirs.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (small images)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--cases", default="infer,train", help="comma-separated cases")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument(
        "--channels-last", action="store_true", help="both backbones in channels-last format"
    )
    parser.add_argument("--batches", default=None, help="comma-separated inference batches")
    parser.add_argument(
        "--dtypes", default=None, help="fp32,bf16 (default: both on the GPU, fp32 on the CPU)"
    )
    parser.add_argument(
        "--fold-bn",
        action="store_true",
        help="inference with rpnkit's backbone batch norms folded (as its CLI runs it)",
    )
    args = parser.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    cuda = device.type == "cuda"
    reps = args.reps or (20 if cuda else 2)
    warmup = 5 if cuda else 1
    h, w = (800, 1333) if cuda else (320, 533)
    torch.backends.cudnn.benchmark = True  # both sides
    import torchvision

    print(
        f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, reps {reps}, images {h}x{w}"
    )
    ours, theirs = build_pair(device, channels_last=args.channels_last)
    if not cuda:
        theirs.transform.min_size, theirs.transform.max_size = (h,), w
    cases = set(args.cases.split(","))
    dtypes = (torch.float32, torch.bfloat16) if cuda else (torch.float32,)
    if args.dtypes:
        named = {"fp32": torch.float32, "bf16": torch.bfloat16}
        dtypes = tuple(named[d] for d in args.dtypes.split(","))
    if "infer" in cases:
        infer_model = ours
        if args.fold_bn:
            import copy

            from rpnkit.engine.device import fold_for_inference

            infer_model = fold_for_inference(copy.deepcopy(ours))
        for dtype in dtypes:
            batches = (1, 8) if cuda else (1, 2)
            if args.batches:
                batches = tuple(int(b) for b in args.batches.split(","))
            for batch in batches:
                bench_infer(device, infer_model, theirs, batch, dtype, reps, warmup, h, w)
    if "train" in cases:
        for dtype in dtypes[::-1]:
            bench_train(device, ours, theirs, 8 if cuda else 2, dtype, reps, warmup, h, w)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ROWS, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
