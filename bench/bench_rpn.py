"""rpnkit against torchvision, in one process, on the same weights and inputs.

    PYTHONPATH=src python bench/bench_rpn.py            # on a CUDA GPU
    PYTHONPATH=src python bench/bench_rpn.py --cpu      # fewer repetitions, on the CPU

Timing: CUDA events around each call, warm-up first, the median of ``--reps`` calls (host
clock with a synchronise on the CPU). Prints ours, theirs, the ratio and a correctness check
per case, and writes the rows as JSON to ``--json``.

Cases:
- select: head outputs -> final proposals (R50-FPN, 800x1333 in an 832x1344 batch, 1000/1000
  per level/image), batch 1, 8, 32, fp32 and bf16. Theirs: BoxCoder.decode of every anchor +
  RegionProposalNetwork.filter_proposals.
- rpn: the whole RPN module (head + anchors + selection), batch 8, fp32 and bf16 autocast.
- vgg: the paper's single level, VGG-16 conv5_3 at 800x800, 6000 -> NMS -> 300.
- assign: target assignment (matching + sampling), batch 8 with COCO-like GT, against
  torchvision's assign_targets_to_anchors + its sampler; and one crowded image with 1,000 GT.
- graph / compile: our selection captured in a CUDA graph, and under torch.compile(fullgraph).
- syncs: our RPN inference under torch.cuda.set_sync_debug_mode("error"), and a count of the
  syncs of one RPN training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import OrderedDict

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.rpn import concat_box_prediction_layers

from rpnkit.modeling.anchors import AnchorConfig
from rpnkit.modeling.proposal_model import normalize
from rpnkit.modeling.rpn import ProposalConfig, RegionProposalNetwork, RPNConfig, select_proposals
from rpnkit.modeling.structures import GroundTruth
from rpnkit.testing import copy_rpn_head_to_torchvision, same_proposals

ROWS: list[dict] = []


def timeit(fn, *, reps: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def timeit_alternating(fn_a, fn_b, *, reps: int, warmup: int, device: torch.device):
    """Median milliseconds of ``fn_a()`` and ``fn_b()``, called in turn: on a shared, noisy
    machine drifts then hit both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    a, b = [], []
    for _ in range(reps):
        a.append(timeit(fn_a, reps=1, warmup=0, device=device))
        b.append(timeit(fn_b, reps=1, warmup=0, device=device))
    return statistics.median(a), statistics.median(b)


def report(case: str, ours_ms: float, theirs_ms: float | None, check: str, **extra) -> None:
    ratio = theirs_ms / ours_ms if theirs_ms else None
    row = {
        "case": case,
        "ours_ms": ours_ms,
        "theirs_ms": theirs_ms,
        "speedup": ratio,
        "check": check,
        **extra,
    }
    ROWS.append(row)
    theirs = f"{theirs_ms:9.3f}" if theirs_ms is not None else "        -"
    speed = f"{ratio:6.2f}x" if ratio is not None else "      -"
    print(f"{case:<34} ours {ours_ms:9.3f} ms  theirs {theirs} ms  {speed}  {check}", flush=True)


def make_pair(channels, strides, sizes, pre, post, *, nms_per_level=True, seed=0):
    """Our RPN and torchvision's with the same anchors, settings and head weights."""
    torch.manual_seed(seed)
    config = RPNConfig(
        anchors=AnchorConfig(
            levels=AnchorConfig.pyramid(strides=strides, sizes=sizes).levels
            if len(strides) > 1
            else AnchorConfig.single_level(stride=strides[0], sizes=sizes).levels,
            round_base=True,
        ),
        train_proposals=ProposalConfig(pre, post, nms_per_level=nms_per_level),
        test_proposals=ProposalConfig(pre, post, nms_per_level=nms_per_level),
    )
    ours = RegionProposalNetwork(in_channels=channels, config=config)
    for p in ours.head.parameters():  # spread the scores: init-scale weights give near ties
        torch.nn.init.normal_(p, std=0.05)
    levels = config.anchors.levels
    tv = TVRPN(
        TVAnchorGenerator(tuple(lv.sizes for lv in levels), tuple(lv.ratios for lv in levels)),
        TVRPNHead(channels, levels[0].num_anchors),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n=dict(training=pre, testing=pre),
        post_nms_top_n=dict(training=post, testing=post),
        nms_thresh=0.7,
    )
    copy_rpn_head_to_torchvision(ours.head, tv.head)
    return ours, tv


def image_sizes_for(batch: int, h: int, w: int) -> list[tuple[int, int]]:
    # different true sizes inside one padded batch
    return [(h - 16 * (i % 3), w - 24 * (i % 4)) for i in range(batch)]


def compare(ours_props, tv_boxes, tv_scores) -> tuple[bool, float]:
    """(identical up to the order of equal scores, fraction of images that are)."""
    same = sum(
        same_proposals(boxes, scores, b_tv, s_tv, atol=1e-3)
        for (boxes, scores), b_tv, s_tv in zip(ours_props.per_image(), tv_boxes, tv_scores)
    )
    return same == len(tv_boxes), same / len(tv_boxes)


def bench_select(device, batch, dtype, reps, warmup, channels=256):
    strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
    pad_h, pad_w = 832, 1344
    ours, tv = make_pair(channels, strides, sizes, 1000, 1000)
    ours.to(device).eval()
    tv.to(device).eval()
    sizes_list = image_sizes_for(batch, 800, 1333)
    g = torch.Generator(device="cpu").manual_seed(1)
    feats = [
        torch.randn(batch, channels, pad_h // s, pad_w // s, generator=g).to(device)
        for s in strides
    ]
    images = ImageList(torch.zeros(batch, 3, pad_h, pad_w, device=device), sizes_list)
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
    ):
        tv_obj, tv_deltas = tv.head(feats)
    tv_anchors = tv.anchor_generator(images, feats)
    counts = [o[0].numel() for o in tv_obj]
    tv_obj_flat, tv_deltas_flat = concat_box_prediction_layers(tv_obj, tv_deltas)
    fs = [(f.shape[-2], f.shape[-1]) for f in feats]
    anchors = ours.anchor_generator(fs, device=device)
    level_sizes = ours.anchor_generator.level_sizes(fs)
    logits = tv_obj_flat.view(batch, -1)
    deltas = tv_deltas_flat.view(batch, -1, 4)
    image_sizes = torch.tensor(sizes_list, device=device)
    cfg = ours.config.test_proposals
    coder = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    # bf16: both sides get bf16 head outputs and run under autocast (torchvision's NMS casts
    # to float32 only under autocast)
    amp = dtype == torch.bfloat16

    def run_ours():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return select_proposals(logits, deltas, anchors, level_sizes, image_sizes, cfg)

    def run_theirs():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            boxes = coder.decode(tv_deltas_flat.detach(), tv_anchors).view(batch, -1, 4)
            return tv.filter_proposals(boxes, tv_obj_flat.detach(), sizes_list, counts)

    with torch.no_grad():
        assert torch.equal(anchors, tv_anchors[0]), "anchors differ"
        props = run_ours()
        tv_boxes, tv_scores = run_theirs()
        identical, frac = compare(props, tv_boxes, tv_scores)
        t_ours = timeit(run_ours, reps=reps, warmup=warmup, device=device)
        t_theirs = timeit(run_theirs, reps=reps, warmup=warmup, device=device)
    name = "fp32" if dtype == torch.float32 else "bf16"
    check = "identical proposals" if identical else f"same on {frac:.0%} of images"
    report(f"select R50-FPN b{batch} {name}", t_ours, t_theirs, check, identical=identical)
    return run_ours, (logits, deltas, anchors, level_sizes, image_sizes, cfg)


def bench_graph_and_compile(device, args, reps, warmup):
    logits, deltas, anchors, level_sizes, image_sizes, cfg = args

    def run():
        return select_proposals(logits, deltas, anchors, level_sizes, image_sizes, cfg)

    with torch.no_grad():
        reference = run()
        eager_ms = timeit(run, reps=reps, warmup=warmup, device=device)
        # CUDA graph: capture once, replay
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = run()
        graph.replay()
        torch.cuda.synchronize()
        same = torch.equal(captured.boxes, reference.boxes) and torch.equal(
            captured.num, reference.num
        )
        graph_ms = timeit(graph.replay, reps=reps, warmup=warmup, device=device)
        report(
            "select b8 fp32, CUDA graph replay",
            graph_ms,
            eager_ms,
            "captured; equal to eager" if same else "captured; DIFFERS from eager",
            theirs_is="our eager",
        )
        try:
            compiled = torch.compile(select_proposals, fullgraph=True, dynamic=False)
            out = compiled(logits, deltas, anchors, level_sizes, image_sizes, cfg)
            same = all(
                same_proposals(b, s, rb, rs, atol=1e-3, score_atol=1e-6)
                for (b, s), (rb, rs) in zip(out.per_image(), reference.per_image())
            )
            comp_ms = timeit(
                lambda: compiled(logits, deltas, anchors, level_sizes, image_sizes, cfg),
                reps=reps,
                warmup=warmup,
                device=device,
            )
            report(
                "select b8 fp32, compile(fullgraph)",
                comp_ms,
                eager_ms,
                "compiled; equal to eager" if same else "compiled; DIFFERS from eager",
                theirs_is="our eager",
            )
        except Exception as err:  # report, do not hide
            report(
                "select b8 fp32, compile(fullgraph)",
                float("nan"),
                eager_ms,
                f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:120]}",
            )


def bench_rpn_module(device, dtype, reps, warmup, batch=8, channels=256):
    strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
    pad_h, pad_w = 832, 1344
    ours, tv = make_pair(channels, strides, sizes, 1000, 1000)
    ours.to(device).eval()
    tv.to(device).eval()
    sizes_list = image_sizes_for(batch, 800, 1333)
    g = torch.Generator(device="cpu").manual_seed(2)
    feats = [
        torch.randn(batch, channels, pad_h // s, pad_w // s, generator=g).to(device)
        for s in strides
    ]
    images = ImageList(torch.zeros(batch, 3, pad_h, pad_w, device=device), sizes_list)
    image_sizes = torch.tensor(sizes_list, device=device)
    feat_dict = OrderedDict(enumerate(feats))
    amp = dtype == torch.bfloat16

    def run_ours():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return ours(feats, image_sizes)

    def run_theirs():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return tv(images, feat_dict)

    with torch.no_grad():
        out = run_ours()
        tv_boxes, _ = run_theirs()
        same = sum(
            b.shape == t.shape and torch.allclose(b, t, atol=1e-2, rtol=0)
            for (b, _), t in zip(out.proposals.per_image(), tv_boxes)
        )
        t_ours = timeit(run_ours, reps=reps, warmup=warmup, device=device)
        t_theirs = timeit(run_theirs, reps=reps, warmup=warmup, device=device)
    name = "fp32" if dtype == torch.float32 else "bf16"
    report(
        f"RPN module R50-FPN b{batch} {name}",
        t_ours,
        t_theirs,
        f"same proposals on {same}/{batch} images",
    )
    return ours, feats, image_sizes


def bench_vgg(device, reps, warmup, batch=1):
    ours, tv = make_pair(512, (16,), (128, 256, 512), 6000, 300, nms_per_level=False)
    ours.to(device).eval()
    tv.to(device).eval()
    g = torch.Generator(device="cpu").manual_seed(3)
    feats = [torch.randn(batch, 512, 50, 50, generator=g).to(device)]
    sizes_list = [(800, 800)] * batch
    images = ImageList(torch.zeros(batch, 3, 800, 800, device=device), sizes_list)
    image_sizes = torch.tensor(sizes_list, device=device)
    with torch.no_grad():
        out = ours(feats, image_sizes)
        tv_boxes, _ = tv(images, OrderedDict(enumerate(feats)))
        same = sum(
            b.shape == t.shape and torch.allclose(b, t, atol=1e-3, rtol=0)
            for (b, _), t in zip(out.proposals.per_image(), tv_boxes)
        )
        t_ours = timeit(lambda: ours(feats, image_sizes), reps=reps, warmup=warmup, device=device)
        t_theirs = timeit(
            lambda: tv(images, OrderedDict(enumerate(feats))),
            reps=reps,
            warmup=warmup,
            device=device,
        )
    report(
        f"RPN module VGG16-C5 800x800 b{batch}",
        t_ours,
        t_theirs,
        f"same proposals on {same}/{batch} images",
    )


def random_gt(batch, sizes_list, n_range, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for h, w in sizes_list:
        n = int(torch.randint(n_range[0], n_range[1] + 1, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = torch.rand(n, 2, generator=g) * 300 + 16
        boxes.append(torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], 1))
    return boxes


def bench_assign(device, reps, warmup, batch=8):
    strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
    ours, tv = make_pair(256, strides, sizes, 2000, 2000)
    ours.to(device).train()
    tv.to(device).train()
    pad_h, pad_w = 832, 1344
    sizes_list = image_sizes_for(batch, 800, 1333)
    fs = [(pad_h // s, pad_w // s) for s in strides]
    anchors = ours.anchor_generator(fs, device=device)
    image_sizes = torch.tensor(sizes_list, device=device)
    # validated on the CPU, as rpnkit's collate does, then moved: no sync left on the GPU
    boxes_cpu = random_gt(batch, sizes_list, (3, 20), 4)
    gt = GroundTruth.from_lists(boxes_cpu).check(torch.tensor(sizes_list)).to(device)
    boxes = [b.to(device) for b in boxes_cpu]
    targets = [{"boxes": b} for b in boxes]
    anchors_list = [anchors] * batch

    def run_ours():
        return ours.label_and_sample_anchors(anchors, image_sizes, gt)

    def run_theirs():
        labels, _ = tv.assign_targets_to_anchors(anchors_list, targets)
        return tv.fg_bg_sampler(labels), labels

    with torch.no_grad():
        match, _ = run_ours()
        (_, tv_labels) = run_theirs()
        ours_labels = match.labels()
        same = all(
            torch.equal((ours_labels[i] == 1), (tv_labels[i] == 1))
            and torch.equal((ours_labels[i] == 0), (tv_labels[i] == 0))
            for i in range(batch)
        )
        t_ours = timeit(run_ours, reps=reps, warmup=warmup, device=device)
        t_theirs = timeit(run_theirs, reps=reps, warmup=warmup, device=device)
    report(
        f"assign targets b{batch}",
        t_ours,
        t_theirs,
        "identical labels" if same else "labels DIFFER",
    )

    # one crowded image: 1,000 GT boxes against all anchors of an 832x1344 image
    crowd = GroundTruth.from_lists(random_gt(1, sizes_list[:1], (1000, 1000), 5))
    crowd = crowd.check(torch.tensor(sizes_list[:1])).to(device)
    crowd_targets = [{"boxes": crowd.boxes[0]}]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with torch.no_grad():
        t_ours = timeit(
            lambda: ours.label_and_sample_anchors(anchors, image_sizes[:1], crowd),
            reps=max(3, reps // 4),
            warmup=1,
            device=device,
        )
    peak_ours = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else 0
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            t_theirs = timeit(
                lambda: tv.assign_targets_to_anchors([anchors], crowd_targets),
                reps=max(3, reps // 4),
                warmup=1,
                device=device,
            )
        peak_theirs = (
            (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else 0
        )
    except torch.OutOfMemoryError:
        t_theirs, peak_theirs = None, float("inf")
    report(
        "assign 1 image, 1000 GT",
        t_ours,
        t_theirs,
        f"peak extra memory ours {peak_ours:.0f} MiB, theirs {peak_theirs:.0f} MiB",
        peak_ours_mib=peak_ours,
        peak_theirs_mib=peak_theirs,
    )


def check_syncs(device, ours, feats, image_sizes):
    """RPN inference under sync debug mode "error"; count the syncs of a training step."""
    ours.eval()
    with torch.no_grad():
        ours(feats, image_sizes)  # warm-up: caches anchors and index tables
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            ours(feats, image_sizes)
            verdict = "no sync in RPN inference"
        except RuntimeError as err:
            verdict = f"SYNC in inference: {str(err).splitlines()[0][:100]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
    report("syncs: RPN inference b8", float("nan"), None, verdict)

    ours.train()
    sizes_cpu = image_sizes.cpu()
    gt = GroundTruth.from_lists(random_gt(len(sizes_cpu), sizes_cpu.tolist(), (3, 20), 6))
    gt = gt.check(sizes_cpu).to(device)  # validated on the CPU, as collate does
    ours(feats, image_sizes, gt)
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ours(feats, image_sizes, gt)
        sum(out.losses.values()).backward()
    torch.cuda.set_sync_debug_mode(0)
    syncs = [
        str(w.message).splitlines()[0][:80]
        for w in caught
        if "synchroniz" in str(w.message).lower()
    ]
    report("syncs: RPN training step b8", float("nan"), None, f"{len(syncs)} sync(s)", syncs=syncs)


def bench_effnet_model(device, reps, warmup):
    """Backbone + RPN inference with effnet-lite0-fpn at 640x640, rpnkit against torchvision's
    RPN on the same backbone weights and head weights (issue 6's CPU target). 640 is a multiple
    of 64: torchvision derives strides by integer division, which is exact only then."""
    import dataclasses

    from accuracy_rpn import TorchvisionProposalModel

    from rpnkit.modeling.presets import build_model, preset_config

    torch.manual_seed(0)
    config = preset_config("effnet-lite0-fpn")
    anchors = dataclasses.replace(config.rpn.anchors, round_base=True)  # torchvision rounds them
    config = dataclasses.replace(config, rpn=dataclasses.replace(config.rpn, anchors=anchors))
    ours = build_model(config).to(device).eval()
    for p in ours.rpn.head.parameters():  # spread the scores: init-scale weights give near ties
        torch.nn.init.normal_(p, std=0.05)
    theirs = TorchvisionProposalModel(ours).to(device).eval()  # shares the backbone module
    g = torch.Generator().manual_seed(7)
    images = torch.rand(1, 3, 640, 640, generator=g).to(device)
    sizes = torch.tensor([[640, 640]], device=device)
    with torch.no_grad():
        a = ours(images, sizes).proposals.per_image()[0][0]
        b = theirs(images, sizes).proposals.per_image()[0][0]
        # the wrapper's scores are ranks: compare the boxes as sets
        zeros = torch.zeros(len(a))
        same = len(a) == len(b) and same_proposals(a, zeros, b, torch.zeros(len(b)), atol=1e-2)
        t_ours, t_theirs = timeit_alternating(
            lambda: ours(images, sizes),
            lambda: theirs(images, sizes),
            reps=reps,
            warmup=warmup,
            device=device,
        )
        # the part that differs: the RPN on the same backbone features
        feats = ours.backbone(normalize(images, sizes, ours.pixel_mean, ours.pixel_std))
        image_list = ImageList(images, [(640, 640)])
        rpn_ours, rpn_theirs = timeit_alternating(
            lambda: ours.rpn(feats, sizes),
            lambda: theirs.rpn(image_list, OrderedDict(enumerate(feats))),
            reps=reps,
            warmup=warmup,
            device=device,
        )
    # rpnkit as its CLI runs inference: the backbone's frozen batch norms folded into its
    # convolutions (torchvision's model keeps them)
    import copy

    from rpnkit.engine.device import fold_for_inference

    folded = fold_for_inference(copy.deepcopy(ours))
    with torch.no_grad():
        c = folded(images, sizes).proposals.per_image()[0][0]
        found = (c[:, None, :] - b[None, :, :]).abs().amax(-1).min(1).values < 1e-2
        t_folded, t_theirs2 = timeit_alternating(
            lambda: folded(images, sizes),
            lambda: theirs(images, sizes),
            reps=reps,
            warmup=warmup,
            device=device,
        )
    threads = torch.get_num_threads()
    report(
        f"effnet-lite0-fpn 640x640 b1, BN folded ({device.type}, {threads} threads)",
        t_folded,
        t_theirs2,
        f"{float(found.float().mean()):.1%} of the proposals equal to 0.01 px",
    )
    report(
        f"RPN on effnet-lite0-fpn features 640x640 b1 ({device.type}, {threads} threads)",
        rpn_ours,
        rpn_theirs,
        "same backbone features",
    )
    report(
        f"effnet-lite0-fpn 640x640 b1 ({device.type}, {threads} threads)",
        t_ours,
        t_theirs,
        "same proposals" if same else "proposals DIFFER",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument(
        "--cases", default="select,graph,rpn,vgg,assign,syncs", help="comma-separated cases to run"
    )
    args = parser.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    reps = args.reps or (50 if device.type == "cuda" else 5)
    warmup = 10 if device.type == "cuda" else 1
    cases = set(args.cases.split(","))
    import torchvision

    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, reps {reps}"
    )
    graph_args = None
    if "select" in cases:
        batches = (1, 8, 32) if device.type == "cuda" else (1, 8)
        # torchvision's CPU NMS has no bf16 kernel: bf16 runs on the GPU only
        dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
        for dtype in dtypes:
            for b in batches:
                _, a = bench_select(device, b, dtype, reps, warmup)
                if b == 8 and dtype == torch.float32:
                    graph_args = a
    if "graph" in cases and device.type == "cuda" and graph_args is not None:
        bench_graph_and_compile(device, graph_args, reps, warmup)
    rpn_state = None
    if "rpn" in cases:
        for dtype in (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,):
            rpn_state = bench_rpn_module(device, dtype, reps, warmup)
    if "vgg" in cases:
        bench_vgg(device, reps, warmup)
    if "assign" in cases:
        bench_assign(device, reps, warmup)
    if "effnet" in cases:
        bench_effnet_model(device, reps, warmup)
    if "syncs" in cases and device.type == "cuda" and rpn_state is not None:
        check_syncs(device, *rpn_state)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ROWS, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
