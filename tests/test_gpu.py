"""GPU-only tests: run on a CUDA machine (skipped elsewhere). Timings are never asserted."""

import pytest
import torch
from conftest import tiny_detector_pair

from rpnkit.modeling.anchors import AnchorConfig
from rpnkit.modeling.nms import _nms_keep_torchvision, nms_keep
from rpnkit.modeling.rpn import ProposalConfig, RegionProposalNetwork, RPNConfig, select_proposals
from rpnkit.modeling.structures import GroundTruth
from rpnkit.testing import same_proposals

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _groups(num_groups, n, seed, valid_fraction=0.8):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_groups, n, 2, generator=g) * 600
    wh = torch.rand(num_groups, n, 2, generator=g) * 200 + 1
    boxes = torch.cat([xy, xy + wh], -1)
    valid = torch.rand(num_groups, n, generator=g) < valid_fraction
    return boxes, valid


@cuda
@pytest.mark.parametrize(("num_groups", "n"), [(1, 1), (3, 31), (40, 1000), (8, 5000), (2, 33)])
def test_triton_nms_equals_torchvision(num_groups, n):
    # Exact: the kernel computes torchvision's float32 IoU with the same operations.
    boxes, valid = _groups(num_groups, n, seed=n)
    for thr in (0.3, 0.5, 0.7):
        ours = nms_keep(boxes.cuda(), valid.cuda(), thr).cpu()
        zeros = torch.zeros(valid.shape, dtype=torch.int32, device="cuda")
        ref = _nms_keep_torchvision(boxes.cuda(), valid.cuda(), zeros, thr).cpu()
        assert torch.equal(ours, ref), f"{num_groups}x{n} at {thr}"
        classes = torch.randint(0, 5, valid.shape, generator=torch.Generator().manual_seed(n))
        ours = nms_keep(boxes.cuda(), valid.cuda(), thr, classes=classes.cuda()).cpu()
        ref = _nms_keep_torchvision(boxes.cuda(), valid.cuda(), classes.cuda(), thr).cpu()
        assert torch.equal(ours, ref), f"{num_groups}x{n} at {thr}, 5 classes"
        single = _nms_keep_torchvision(boxes, valid, zeros.cpu(), thr)
        for max_keep in (1, 37, 300):
            ours = nms_keep(boxes.cuda(), valid.cuda(), thr, max_keep=max_keep).cpu()
            for o, r in zip(ours, single):
                first = r.nonzero().squeeze(1)[:max_keep]  # exact up to the max_keep-th kept
                assert torch.equal(o.nonzero().squeeze(1)[: len(first)], first)


def _rpn_and_inputs(batch=4):
    torch.manual_seed(0)
    config = RPNConfig(
        anchors=AnchorConfig.pyramid(),
        test_proposals=ProposalConfig(1000, 1000),
    )
    rpn = RegionProposalNetwork(in_channels=64, config=config).cuda()
    for p in rpn.head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    feats = [torch.randn(batch, 64, 512 // s, 640 // s, device="cuda") for s in (4, 8, 16, 32, 64)]
    sizes = torch.tensor([[512, 640], [500, 600], [480, 640], [512, 512]][:batch], device="cuda")
    return rpn, feats, sizes


@cuda
def test_rpn_inference_has_no_gpu_to_cpu_sync():
    rpn, feats, sizes = _rpn_and_inputs()
    rpn.eval()
    with torch.no_grad():
        rpn(feats, sizes)  # warm-up: anchors and index tables are cached per feature size
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = rpn(feats, sizes)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert out.proposals.num.min() > 0


@cuda
def test_gpu_selection_equals_cpu_selection():
    # Same head outputs on both devices (the convs themselves differ: cuDNN may use TF32), so
    # the Triton NMS path is compared with the torchvision CPU path on identical inputs.
    rpn, feats, sizes = _rpn_and_inputs()
    with torch.no_grad():
        logits, deltas = rpn.head.flatten(*rpn.head(feats))
    fs = [(f.shape[-2], f.shape[-1]) for f in feats]
    level_sizes = rpn.anchor_generator.level_sizes(fs)
    for per_level in (True, False):
        cfg = ProposalConfig(1000, 1000, nms_per_level=per_level)
        gpu = select_proposals(
            logits, deltas, rpn.anchor_generator(fs, device="cuda"), level_sizes, sizes, cfg
        )
        cpu = select_proposals(
            logits.cpu(), deltas.cpu(), rpn.anchor_generator(fs), level_sizes, sizes.cpu(), cfg
        )
        for (bg, sg), (bc, sc) in zip(gpu.per_image(), cpu.per_image()):
            assert same_proposals(bg.cpu(), sg.cpu(), bc, sc, atol=1e-3, score_atol=1e-6)


@cuda
def test_proposal_stage_captures_in_a_cuda_graph_and_compiles_fullgraph():
    rpn, feats, sizes = _rpn_and_inputs()
    with torch.no_grad():
        logits, deltas = rpn.head.flatten(*rpn.head(feats))
    fs = [(f.shape[-2], f.shape[-1]) for f in feats]
    anchors = rpn.anchor_generator(fs, device="cuda")
    level_sizes = rpn.anchor_generator.level_sizes(fs)
    cfg = rpn.config.test_proposals

    def run():
        return select_proposals(logits, deltas, anchors, level_sizes, sizes, cfg)

    reference = run()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.boxes, reference.boxes)

    compiled = torch.compile(select_proposals, fullgraph=True, dynamic=False)
    out = compiled(logits, deltas, anchors, level_sizes, sizes, cfg)
    # the compiler may fuse the decoding arithmetic (FMA): boxes to 1e-3 px
    for (b, s), (rb, rs) in zip(out.per_image(), reference.per_image()):
        assert same_proposals(b, s, rb, rs, atol=1e-3, score_atol=1e-6)


@cuda
def test_rpn_training_step_runs_on_gpu():
    rpn, feats, sizes = _rpn_and_inputs()
    rpn.train()
    gt = GroundTruth.from_lists(
        [torch.tensor([[10.0, 20, 200, 300], [300, 100, 400, 200]], device="cuda")] * 4
    )
    out = rpn(feats, sizes, gt)
    sum(out.losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in rpn.head.parameters())


def _scene(seed, counts=(7, 0, 20, 300)):
    g = torch.Generator().manual_seed(seed)
    boxes, ignore = [], []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 500
        wh = torch.rand(n, 2, generator=g) * 200 + 8
        boxes.append(torch.cat([xy, xy + wh], 1))
        ignore.append(torch.rand(n, generator=g) < 0.1)
    if counts[2] > 5:
        boxes[2][3] = boxes[2][5]  # a duplicated GT box: ties between GT boxes
    return GroundTruth.from_lists(boxes, ignore=ignore)


@cuda
def test_triton_matcher_equals_the_pytorch_path():
    # Exact: the kernel computes IoU like box_iou, without floating-point contraction.
    from rpnkit.modeling.anchors import AnchorGenerator
    from rpnkit.modeling.matching import Matcher

    anchors = AnchorGenerator(AnchorConfig.pyramid())(
        [(128, 160), (64, 80), (32, 40), (16, 20), (8, 10)], device="cuda"
    )
    gt = _scene(0).to("cuda")
    matcher = Matcher()
    real, crowd = gt.mask & ~gt.ignore, gt.mask & gt.ignore
    fused = matcher(anchors, gt.boxes, gt.mask, gt.ignore)
    chunked = matcher._match_chunked(anchors, gt.boxes, real, crowd)
    assert torch.equal(fused.matched_iou, chunked[0])
    from rpnkit.modeling.matching import BELOW_LOW_THRESHOLD

    reference = Matcher(chunk_elements=1 << 20)
    # the PyTorch path on the CPU gives the same states
    cpu = reference(anchors.cpu(), gt.boxes.cpu(), gt.mask.cpu(), gt.ignore.cpu())
    assert torch.equal(fused.matched_idxs.cpu(), cpu.matched_idxs)
    assert (fused.matched_idxs == BELOW_LOW_THRESHOLD).any()


@cuda
def test_target_assignment_has_no_gpu_to_cpu_sync():
    rpn, feats, sizes = _rpn_and_inputs()
    fs = [(f.shape[-2], f.shape[-1]) for f in feats]
    anchors = rpn.anchor_generator(fs, device="cuda")
    gt = _scene(1, counts=(5, 0, 12, 40)).to("cuda")
    from rpnkit.modeling.anchors import visible_anchors

    rpn.matcher(anchors, gt.boxes, gt.mask, gt.ignore)  # warm-up: compiles the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        visible = visible_anchors(anchors, sizes, None)
        match = rpn.matcher(anchors, gt.boxes, gt.mask, gt.ignore, visible)
        sample = rpn.sampler(match.labels())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert int(sample.pos_valid.sum()) > 0


@cuda
def test_detector_on_gpu_equals_torchvision_and_postprocessing_does_not_sync():
    # The batched per-class Triton NMS against torchvision's per-image batched_nms; then the
    # second stage's post-processing alone under sync debug mode "error".
    from rpnkit.data import SyntheticShapes
    from rpnkit.modeling.roi_heads import postprocess_detections

    ours, theirs = tiny_detector_pair()
    ours, theirs = ours.cuda(), theirs.cuda()
    shapes = SyntheticShapes(2, seed=3)
    crops = [shapes[0]["image"].cuda(), shapes[1]["image"][:, :224, :].cuda()]
    crops = [c.float() / 255 for c in crops]  # torchvision takes floats in [0, 1]
    images = torch.zeros(2, 3, 256, 256, device="cuda")
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = c
    sizes = torch.tensor([[256, 256], [224, 256]], device="cuda")
    torch.backends.cudnn.allow_tf32 = False  # the same convolution arithmetic on both sides
    try:
        with torch.no_grad():
            out = ours(images, sizes)
            ref = theirs(crops)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    for (boxes, scores, _), r in zip(out.detections.per_image(), ref):
        assert len(boxes) == len(r["boxes"]) > 10
        order = scores.argsort(descending=True, stable=True)
        ref_order = r["scores"].argsort(descending=True, stable=True)
        assert torch.allclose(scores[order], r["scores"][ref_order], atol=1e-5)
    proposals = out.proposals
    r = proposals.boxes.shape[1]
    c = ours.roi_heads.config.num_classes
    logits = torch.randn(2 * r, c, device="cuda") * 3
    deltas = torch.randn(2 * r, 4 * c, device="cuda") * 0.1
    args = (logits, deltas, proposals.boxes, proposals.valid, sizes, ours.roi_heads.config)
    postprocess_detections(*args, ours.roi_heads.coder)  # warm-up (Triton compile)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        dets = postprocess_detections(*args, ours.roi_heads.coder)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert dets.boxes.shape == (2, 100, 4)


@cuda
@pytest.mark.parametrize("preset", ["effnet-lite0-fpn", "r50-fpn"])
def test_detector_inference_has_no_gpu_to_cpu_sync(preset):
    # What propose, detect and eval launch per batch (runner.run_batches): the whole forward of
    # a preset's Faster R-CNN in bf16, whose one wait per batch is for its outputs, afterwards.
    from rpnkit.modeling.presets import (
        build_detector,
        detector_config,
        preset_config,
        without_pretrained_weights,
    )

    torch.manual_seed(0)
    config = detector_config(without_pretrained_weights(preset_config(preset)), 3)
    model = build_detector(config).cuda().eval()
    images = torch.rand(2, 3, 320, 416, device="cuda")
    sizes = torch.tensor([[320, 416], [288, 380]], device="cuda")
    scales = torch.tensor([1.0, 0.9], device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(images, sizes, image_scales=scales)  # warm-up: Triton compiles, cuDNN plans
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(images, sizes, image_scales=scales)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert out.detections.boxes.shape[:2] == (2, config.roi.detections_per_image)


@cuda
def test_batch_norm_folds_on_gpu_with_tf32_on():
    # A random ResNet-50 (frozen BN, identity statistics) has huge activations: with cuDNN's
    # default TF32 its rounding alone once failed the fold's output check (the check now runs
    # in full float32). The folded model keeps the output to float32 rounding.
    from rpnkit.engine.device import fold_for_inference
    from rpnkit.modeling.presets import build_model, preset_config

    torch.manual_seed(0)
    model = build_model(preset_config("r50-fpn")).cuda().eval()
    images = torch.rand(1, 3, 256, 256, device="cuda")
    sizes = torch.tensor([[256, 256]], device="cuda")
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, on while folding
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        reference = model.backbone(images)
    fold_for_inference(model)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        folded = model.backbone(images)
    for a, b in zip(reference, folded):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()))
    with torch.no_grad():
        model(images, sizes)  # runs folded, TF32 on


def _trainer_on_gpu(tmp_path, model, amp="none"):
    from rpnkit.data import SyntheticShapes, collate
    from rpnkit.engine.trainer import TrainConfig, Trainer

    config = TrainConfig(
        steps=100, batch_size=4, optimizer="sgd", lr=1e-3, grad_clip=10.0, amp=amp, log_every=50
    )
    trainer = Trainer(model, SyntheticShapes(8), config, out_dir=tmp_path, device="cuda")
    trainer._set_up()
    batch = collate([SyntheticShapes(8)[i] for i in range(4)]).pin_memory().to("cuda")
    return trainer, batch


def assert_steps_without_sync(trainer, batch) -> None:
    """Two warm-up steps (Triton compiles, cuDNN picks its algorithms), then three Trainer
    steps under set_sync_debug_mode("error"), every one finite."""
    for step in range(2):
        trainer._step(batch, step)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(2, 5):
            trainer._step(batch, step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    trainer.watch.flush()
    assert not trainer.watch.pending


@cuda
@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_rpn_training_step_has_no_gpu_to_cpu_sync(tmp_path, amp):
    # The Trainer's whole step (forward, the deferred divergence check, backward, clipping,
    # optimizer, schedule) with GT validated on the CPU by collate, as rpnkit train runs it.
    from rpnkit.modeling.presets import build_model, preset_config

    torch.manual_seed(0)
    trainer, batch = _trainer_on_gpu(tmp_path, build_model(preset_config("tiny")), amp)
    assert_steps_without_sync(trainer, batch)


@cuda
@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-oln-rcnn"])
def test_detector_training_step_has_no_gpu_to_cpu_sync(tmp_path, amp, preset):
    # As above for a Faster R-CNN (and OLN's class-agnostic one) pooling three levels:
    # RoIAlign on one canvas (modeling/pooling.py) replaced the pooler's read of its per-level
    # slice lengths. (tiny-oln-rcnn not yet run on a GPU when written.)
    from rpnkit.data import SyntheticShapes
    from rpnkit.modeling.presets import build_detector, detector_config, preset_config

    torch.manual_seed(0)
    config = detector_config(preset_config(preset), len(SyntheticShapes.class_names))
    trainer, batch = _trainer_on_gpu(tmp_path, build_detector(config), amp)
    assert_steps_without_sync(trainer, batch)


@cuda
def test_divergence_on_gpu_names_the_step_that_diverged(tmp_path):
    from rpnkit.modeling.presets import build_model, preset_config

    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    trainer, batch = _trainer_on_gpu(tmp_path, model)
    original, calls = model.rpn.forward, {"n": 0}

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.losses["loss_rpn_box"] = out.losses["loss_rpn_box"] * float("nan")
        return out

    model.rpn.forward = poisoned
    with pytest.raises(FloatingPointError, match="diverged at step 2"):
        for step in range(6):  # the host may learn of it a step or two later, not more
            trainer._step(batch, step)
        trainer.watch.flush()


@cuda
def test_batches_prefetch_to_the_gpu_from_pinned_memory():
    from rpnkit.data import SyntheticShapes, collate
    from rpnkit.engine.streaming import DevicePrefetcher

    items = SyntheticShapes(6)
    cpu = [collate([items[i], items[i + 1]]).pin_memory() for i in (0, 2, 4)]
    assert cpu[0].images.is_pinned() and cpu[0].targets.boxes.is_pinned()
    on_gpu = list(DevicePrefetcher(iter([cpu[0], None, cpu[1], cpu[2]]), torch.device("cuda")))
    assert on_gpu[1] is None and len(on_gpu) == 4
    for a, b in zip([cpu[0], cpu[1], cpu[2]], [on_gpu[0], on_gpu[2], on_gpu[3]]):
        assert b.images.is_cuda and torch.equal(a.images, b.images.cpu())
        assert torch.equal(a.targets.boxes, b.targets.boxes.cpu())


@cuda
def test_detect_streams_on_gpu_as_on_cpu(tmp_path):
    # The pipelined runner (workers, prefetch, async host copies) gives the CPU's detections.
    import rpnkit
    from rpnkit.data import SyntheticShapes
    from rpnkit.engine.checkpoint import DETECTOR, ModelSpec, save_model
    from rpnkit.modeling.presets import DetectorConfig

    ours, _ = tiny_detector_pair()
    config = DetectorConfig(model=_tiny_rounded(), roi=ours.roi_heads.config, pooled_levels=3)
    path = save_model(tmp_path / "d.safetensors", ours, ModelSpec(DETECTOR, config, tuple("abcd")))
    images = [SyntheticShapes(6, seed=3)[i]["image"] for i in range(6)]
    options = dict(short_side=256, max_size=256, fold_bn=False)
    cpu = rpnkit.load(path, "cpu", **options).detect(images, batch_size=4)
    gpu = rpnkit.load(path, "cuda", num_workers=2, **options).detect(images, batch_size=4)
    assert [a.file_name for a in cpu] == [b.file_name for b in gpu]
    for a, b in zip(cpu, gpu):
        assert len(a.boxes) > 10 and abs(len(a.boxes) - len(b.boxes)) <= 2
        n = min(len(a.scores), len(b.scores), 10)
        assert torch.allclose(a.scores[:n], b.scores[:n], atol=1e-3)


def _tiny_rounded():
    import dataclasses

    from rpnkit.modeling.presets import preset_config

    model = preset_config("tiny")
    anchors = dataclasses.replace(model.rpn.anchors, round_base=True)
    return dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))


@cuda
def test_jpegs_decode_on_the_gpu_as_the_workers_decode_them(tmp_path):
    # nvJPEG, one call per batch: same boxes and sizes as the worker path, pixels within the
    # decoders' rounding; grayscale and rotated JPEGs too; prefetched like any batch.
    import dataclasses

    import numpy as np
    from PIL import Image

    from rpnkit.data import DetectionDataset, collate, read_dataset, train_transforms
    from rpnkit.engine.streaming import DevicePrefetcher

    index = read_dataset(_coco128(), split="train2017")
    index.records = index.records[:16]
    rgb = np.asarray(Image.open(index.records[0].path).convert("RGB"))
    for name, orientation, image in (("gray", 1, rgb[..., 1].copy()), ("turned", 6, rgb)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(image).save(path, "JPEG", quality=95, exif=exif.tobytes())
        h, w = rgb.shape[:2] if orientation == 1 else rgb.shape[1::-1]
        index.records.append(dataclasses.replace(index.records[0], path=path, height=h, width=w))
    transforms = train_transforms(800, 1333, 0.5)
    cpu = DetectionDataset(index, transforms, seed=2)
    gpu = DetectionDataset(index, transforms, seed=2, decode_on_device=True)
    slices = [range(i, i + 6) for i in (0, 6, 12)]
    expected = [collate([cpu[i] for i in s]) for s in slices]
    batches = iter([collate([gpu[i] for i in s]).pin_memory() for s in slices])
    got = list(DevicePrefetcher(batches, torch.device("cuda")))
    for a, b in zip(expected, got):
        assert b.images.is_cuda and b.images.dtype == torch.uint8
        assert torch.equal(a.targets.boxes, b.targets.boxes.cpu())
        diff = (a.images.int() - b.images.cpu().int()).abs().float()
        # nvJPEG upsamples chroma unlike libjpeg's default: a few pixels at sharp colour edges
        # differ by tens of levels (H200: mean 0.19, 0.11 % over 8)
        assert diff.mean() < 1.0 and (diff > 8).float().mean() < 5e-3, (diff.mean(), diff.max())


def _coco128():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return next(  # ../shared beside the checkout, or carried into it (the device tool)
        p for p in (root / ".." / "shared" / "data" / "coco128", root / ".data" / "coco128")
        if p.is_dir()
    )  # fmt: skip


@cuda
def test_pngs_resized_on_the_gpu_detect_as_when_the_workers_resize_them(tmp_path, monkeypatch):
    # PNG photographs enlarged to 800 px: decoded by the workers, resized and prefetched on the
    # GPU by the runner's thread (the default on CUDA), against the workers resizing them.
    import numpy as np
    from PIL import Image

    import rpnkit
    from rpnkit.engine import runner
    from rpnkit.engine.checkpoint import DETECTOR, ModelSpec, save_model
    from rpnkit.modeling.presets import DetectorConfig

    threaded, prefetcher = [], runner.DevicePrefetcher

    def recorded(batches, device, **options):  # which way each run prefetched
        threaded.append(options.get("threaded"))
        return prefetcher(batches, device, **options)

    monkeypatch.setattr(runner, "DevicePrefetcher", recorded)
    pngs = []
    for jpg in sorted((_coco128() / "images" / "train2017").glob("*.jpg"))[:12]:
        pngs.append(tmp_path / f"{jpg.stem}.png")
        Image.open(jpg).convert("RGB").save(pngs[-1])
    ours, _ = tiny_detector_pair()
    config = DetectorConfig(model=_tiny_rounded(), roi=ours.roi_heads.config, pooled_levels=3)
    path = save_model(tmp_path / "d.safetensors", ours, ModelSpec(DETECTOR, config, tuple("abcd")))
    device = rpnkit.load(path, "cuda", num_workers=2, fold_bn=False)
    assert device.dataset(pngs).leaves_pixels_to_device
    on_gpu = device.detect(pngs, batch_size=4)
    workers = rpnkit.load(path, "cuda", num_workers=2, fold_bn=False, decode_on_device=False)
    on_cpu = workers.detect(pngs, batch_size=4)
    assert threaded == [True, False]  # a thread where the GPU resizes, inline where not
    assert [a.file_name for a in on_cpu] == [b.file_name for b in on_gpu]
    for a, b in zip(on_cpu, on_gpu):  # pixels within 1-2 levels of Pillow's: close, not equal
        assert len(a.boxes) > 10 and abs(len(a.boxes) - len(b.boxes)) <= 0.1 * len(a.boxes)
        np.testing.assert_allclose(a.scores[:10].cpu(), b.scores[:10].cpu(), atol=1e-3)
