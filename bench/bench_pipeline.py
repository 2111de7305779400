"""End to end against the model alone, on the GPU: what `rpnkit train` and `rpnkit detect` get
of the model's own speed, and what torchvision's training loop gets.

    PYTHONPATH=src python bench/bench_pipeline.py --data ../shared/data/coco128 --json out.json

Cases, for each backbone (``--backbones``), model kind (``--kinds``: rpn, frcnn) and precision
(``--amps``: fp32, bf16), at 800x1333, batch ``--batch-size``:

- ``model``: rpnkit's training step (the ``Trainer``'s own) on one COCO128 batch already on the
  device, repeated: the model-only rate.
- ``model-mix``: the same step on one epoch of the ``train`` case's own batches, on the device
  (their padded sizes vary, as end to end): the model's rate on the sizes training meets.
- ``train``: rpnkit's ``Trainer`` on COCO128's JPEG files, ``--workers`` processes decoding, as
  ``rpnkit train --decode workers`` runs (the first ``--warmup`` steps excluded).
- ``train-dev``: the same with ``decode_on_device`` (``rpnkit train``'s default on CUDA): the
  workers read the JPEG files, nvJPEG decodes each batch on the GPU, where it is resized,
  flipped and padded.
- ``train-compile``: the same with ``TrainConfig.compile`` (the first steps compile).
- ``tv-train`` (frcnn only): torchvision's ``FasterRCNN`` with a copy of the same backbone, RPN
  and box head weights (``rpnkit.testing.torchvision_faster_rcnn``), fed and stepped the way
  torchvision's detection reference scripts do: float32 images from a standard DataLoader,
  resized on the GPU by the model's transform, ``loss.item()`` every step.
- ``infer`` (frcnn only): inference on a device batch (batch norms folded, as the runtime
  does), and ``rpnkit.load(...).detect`` on COCO128's image files (4 passes, after one
  untimed pass), the time to the first result reported apart; ``--decode`` device (the
  default on CUDA), workers, or both. ``bench_detect_cli.py`` times the ``rpnkit detect``
  command itself.

Random weights (the speed does not depend on them): frozen batch norms are calibrated on a probe
batch so that activations stay in range in bf16. GPU utilisation is sampled with nvidia-smi
during each timed window; ``--profile DIR`` writes a torch.profiler table of a few end-to-end
training steps.

``--poolers canvas,levels`` runs each Faster R-CNN row twice: with rpnkit's RoIAlign on one
canvas (the default, no GPU->CPU sync) and with the level-by-level loop it replaced (one sync
per pooling, to read the slice lengths), for an A/B in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rpnkit.data import Batch, DetectionDataset, collate, read_dataset, train_transforms
from rpnkit.data.images import load_rgb
from rpnkit.engine import streaming
from rpnkit.engine.checkpoint import DETECTOR, RPN, ModelSpec, save_model
from rpnkit.engine.runtime import load
from rpnkit.engine.trainer import TrainConfig, Trainer
from rpnkit.modeling.backbones.frozen_norm import FastFrozenBatchNorm2d
from rpnkit.modeling.pooling import pool_sorted_by_level
from rpnkit.modeling.presets import detector_config, preset_config, without_pretrained_weights
from rpnkit.modeling.roi_heads import MultiLevelRoIPooler
from rpnkit.testing import torchvision_faster_rcnn

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = {"effnet": "effnet-lite0-fpn", "r50": "r50-fpn"}


class GpuUtilisation:
    """Mean GPU utilisation (%) from nvidia-smi, sampled every 100 ms while in the block."""

    def __enter__(self):
        self.samples: list[float] = []
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        except OSError:
            self.proc = None
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):  # a header or a blank line
                self.samples.append(float(line.strip()))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


@torch.no_grad()
def calibrate_frozen_norms(backbone: nn.Module, probe: torch.Tensor) -> None:
    """Set every frozen batch norm's statistics to those of its input on ``probe``, in order:
    a randomly initialised network then keeps unit-scale activations (finite in bf16)."""

    def hook(norm, args):
        x = args[0].float()
        norm.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        norm.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [
        m.register_forward_pre_hook(hook)
        for m in backbone.modules()
        if isinstance(m, FastFrozenBatchNorm2d)
    ]
    backbone.eval()
    backbone(probe)
    for h in handles:
        h.remove()


def build(backbone: str, kind: str, num_classes: int, device, *, channels_last: bool):
    config = without_pretrained_weights(preset_config(BACKBONES[backbone]))
    if kind == "frcnn":
        spec = ModelSpec(
            DETECTOR, detector_config(config, num_classes), tuple(map(str, range(num_classes)))
        )
    else:
        spec = ModelSpec(RPN, config)
    torch.manual_seed(0)
    model = spec.build(pretrained=False)
    first = getattr(model, "first_stage", model)
    calibrate_frozen_norms(first.backbone, torch.rand(2, 3, 512, 512))
    if channels_last:
        first.use_channels_last()
    return model.to(device), spec


def train_config(args, amp: str, steps: int, **changes) -> TrainConfig:
    return dataclasses.replace(TrainConfig(
        steps=steps, batch_size=args.batch_size, optimizer="sgd", lr=1e-3, warmup_steps=0,
        schedule="constant", grad_clip=10.0, amp="none" if amp == "fp32" else amp,
        num_workers=args.workers, log_every=10**9, channels_last=args.layout == "last",
        group_by_aspect=getattr(args, "groups", "aspect") == "aspect", decode_on_device=False,
    ), **changes)  # fmt: skip


def timed(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def model_only(args, model, spec, dataset, amp, device) -> dict:
    """The Trainer's own step on one batch on the device, repeated."""
    trainer = Trainer(model, dataset, train_config(args, amp, 10**6), out_dir=args.runs / "m",
                      spec=spec, device=device, progress=False)  # fmt: skip
    trainer._set_up()
    batch = collate([dataset[i] for i in range(args.batch_size)]).to(device)
    for step in range(args.warmup):
        trainer._step(batch, step)
    with GpuUtilisation() as gpu:
        start = timed(device)
        for step in range(args.steps):
            trainer._step(batch, step)
        seconds = timed(device) - start
    trainer.watch.flush()
    return {"images_per_s": round(args.steps * args.batch_size / seconds, 2), "gpu_util": gpu.mean}


def model_mix(args, model, spec, dataset, amp, device) -> dict:
    """The Trainer's step on one epoch of the training stream's own batches (the ``train``
    case's, whose padded sizes vary), all already on the device, each size seen once before
    the timing: the model's rate on the sizes end-to-end training meets, without the data path."""
    from rpnkit.engine.sampling import EpochIndexed, StepBatchSampler

    trainer = Trainer(model, dataset, train_config(args, amp, 10**6), out_dir=args.runs / "x",
                      spec=spec, device=device, progress=False)  # fmt: skip
    trainer._set_up()
    groups = trainer._aspect_groups()
    items = EpochIndexed(dataset)
    sampler = iter(StepBatchSampler(len(dataset), args.batch_size, seed=0, groups=groups))
    batches = [
        collate([items[i] for i in next(sampler)]).to(device)
        for _ in range(len(dataset) // args.batch_size)
    ]
    for step, batch in enumerate(batches):
        trainer._step(batch, step)
    with GpuUtilisation() as gpu:
        start = timed(device)
        for step in range(args.steps):
            trainer._step(batches[step % len(batches)], step)
        seconds = timed(device) - start
    trainer.watch.flush()
    sizes = {tuple(b.images.shape[-2:]) for b in batches}
    return {"images_per_s": round(args.steps * args.batch_size / seconds, 2), "gpu_util": gpu.mean,
            "sizes": len(sizes)}  # fmt: skip


def loader_only(args, dataset, device) -> dict:
    """The Trainer's data stream alone (workers, pinning, prefetch to the device): the rate the
    data side can feed."""
    from rpnkit.engine.sampling import EpochIndexed, StepBatchSampler
    from rpnkit.engine.streaming import DevicePrefetcher

    loader = DataLoader(
        EpochIndexed(dataset),
        batch_sampler=StepBatchSampler(len(dataset), args.batch_size, seed=0),
        collate_fn=collate, num_workers=args.workers, pin_memory=True,
    )  # fmt: skip
    batches = iter(DevicePrefetcher(iter(loader), device))
    for _ in range(args.warmup):
        next(batches)
    start = timed(device)
    for _ in range(args.steps):
        next(batches)
    seconds = timed(device) - start
    return {"images_per_s": round(args.steps * args.batch_size / seconds, 1)}


def triton_cache_entries() -> int:
    """Kernels Triton has compiled so far (its cache folder), to see compilation mid-run."""
    import os

    folder = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def end_to_end(args, model, spec, dataset, amp, device, profile=None, **changes) -> dict:
    """rpnkit's Trainer from the JPEG files; steps after ``--warmup`` timed from the host, with
    the host's time in each step and between steps (waiting for the next batch). ``changes``:
    to the TrainConfig (``decode_on_device``, ``compile``)."""
    marks: dict[int, float] = {}
    inside: dict[int, float] = {}
    shapes: dict[int, tuple] = {}
    original = Trainer._step

    def step(self, batch, i):
        shapes[i] = (tuple(batch.images.shape[-2:]), int(batch.targets.boxes.shape[1]))
        marks[i] = time.perf_counter()
        out = original(self, batch, i)
        inside[i] = time.perf_counter() - marks[i]
        return out

    total = args.warmup + args.steps
    config = train_config(args, amp, total, **changes)
    trainer = Trainer(model, dataset, config, out_dir=args.runs / "e",
                      spec=spec, device=device, progress=False)  # fmt: skip
    done = {}

    def checkpoint(steps_done, name="checkpoint.safetensors"):  # timing, not writing files
        trainer.watch.flush()
        done["t"] = timed(device)

    trainer.checkpoint = checkpoint
    Trainer._step = step
    try:
        with GpuUtilisation() as gpu:
            trainer.run()
    finally:
        Trainer._step = original
        dataset.decode_on_device = False  # the Trainer set it on the shared dataset
    seconds = done["t"] - marks[args.warmup]
    timed_steps = range(args.warmup, total - 1)
    host = sorted(inside[i] * 1e3 for i in timed_steps)
    gaps = sorted((marks[i + 1] - marks[i] - inside[i]) * 1e3 for i in timed_steps)
    out = {"images_per_s": round(args.steps * args.batch_size / seconds, 2), "gpu_util": gpu.mean,
           "start_s": round(marks[args.warmup] - marks[0], 1),
           "host_step_ms_median": round(host[len(host) // 2], 1),
           "between_steps_ms_median": round(gaps[len(gaps) // 2], 1),
           "between_steps_ms_max": round(gaps[-1], 1),
           "triton_cache": triton_cache_entries()}  # fmt: skip
    seen_sizes, seen_pairs, news = set(), set(), {}
    for i in sorted(shapes):  # (a new image size, a new size and box count)
        news[i] = shapes[i][0] not in seen_sizes, shapes[i] not in seen_pairs
        seen_sizes.add(shapes[i][0])
        seen_pairs.add(shapes[i])
    slow = sorted(timed_steps, key=lambda i: -inside[i])[:6]
    out["slowest"] = [(i, round(inside[i] * 1e3), *shapes[i], *news[i]) for i in slow]
    if profile is not None:
        out["profile"] = str(profile_steps(args, model, spec, dataset, amp, device, profile))
    return out


def profile_steps(args, model, spec, dataset, amp, device, path: Path) -> Path:
    """torch.profiler over a few end-to-end steps: where the host and the device spend time."""
    from torch.profiler import ProfilerActivity, profile

    trainer = Trainer(model, dataset, train_config(args, amp, 14), out_dir=args.runs / "p",
                      spec=spec, device=device, progress=False)  # fmt: skip
    trainer.checkpoint = lambda *a, **k: trainer.watch.flush()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities) as prof:
        trainer.run()
    table = prof.key_averages()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "by device time\n" + table.table(sort_by="self_cuda_time_total", row_limit=25)
        + "\n\nby host time\n" + table.table(sort_by="self_cpu_time_total", row_limit=25)
    )  # fmt: skip
    return path


class ReferenceScriptDataset(Dataset):
    """As torchvision's detection reference scripts prepare COCO: PIL decode, float32 tensor,
    random horizontal flip, a target dict; the model's transform resizes on the GPU."""

    def __init__(self, index) -> None:
        self.records = [r for r in index.records if len(r.boxes)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        import torchvision.transforms.v2.functional as F

        r = self.records[i]
        image = F.to_dtype(F.pil_to_tensor(Image.open(r.path).convert("RGB")), torch.float32,
                           scale=True)  # fmt: skip
        boxes = torch.from_numpy(r.boxes.copy())
        if torch.rand(1) < 0.5:
            image = image.flip(-1)
            boxes[:, [0, 2]] = r.width - boxes[:, [2, 0]]
        return image, {"boxes": boxes, "labels": torch.from_numpy(r.labels)}


def torchvision_loop(args, model, index, amp, device) -> dict:
    """torchvision's FasterRCNN trained as its reference scripts' train_one_epoch does."""
    tv = torchvision_faster_rcnn(model.cpu(), min_size=800, max_size=1333).to(device).train()
    model.to(device)
    loader = DataLoader(ReferenceScriptDataset(index), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, collate_fn=lambda b: tuple(zip(*b)),
                        drop_last=True, persistent_workers=args.workers > 0)  # fmt: skip
    params = [p for p in tv.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    dtype = {"bf16": torch.bfloat16}.get(amp)
    step, start, total = 0, None, args.warmup + args.steps
    with GpuUtilisation() as gpu:
        while step < total:
            for images, targets in loader:
                if step == args.warmup:
                    start = timed(device)
                images = [im.to(device) for im in images]
                targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    losses = sum(tv(images, targets).values())
                if not torch.isfinite(torch.tensor(losses.item())):  # as the scripts do
                    raise FloatingPointError("torchvision's loss diverged")
                optimizer.zero_grad()
                losses.backward()
                optimizer.step()
                step += 1
                if step == total:
                    break
        seconds = timed(device) - start
    return {"images_per_s": round(args.steps * args.batch_size / seconds, 2), "gpu_util": gpu.mean}


@torch.no_grad()
def inference(args, model, spec, files, amp, device) -> dict:
    """Model-only inference on device batches against ``detect`` on image files."""
    path = args.runs / f"{spec.kind}.safetensors"
    save_model(path, model.cpu(), spec)
    runtime = load(path, device, amp="none" if amp == "fp32" else amp, num_workers=args.workers,
                   channels_last=args.layout == "last")  # fmt: skip
    out = inference_rates(runtime, files, args.batch_size, args.warmup, args.steps, device)
    model_rate = out["model_images_per_s"]
    streams = args.decode_stream.split(",")
    variants = [(d, p, s) for d in args.decode.split(",") for p in args.prefetch.split(",")
                for s in (streams if d == "device" else ["normal"])]  # fmt: skip
    for decode in args.decode.split(","):  # every padded size met once, nvJPEG set up
        runtime.decode_on_device = decode == "device"
        for _ in runtime.iter_detections(files, batch_size=args.batch_size):
            pass
    for decode, prefetch, stream in variants:
        runtime.decode_on_device = decode == "device"
        with prefetching(prefetch), decoding_stream(stream, device):
            detect = detect_rate(args, runtime, files, device)
        suffix = (
            ("_workers" if decode == "workers" else "_device")
            + ("" if prefetch == "auto" else f"_{prefetch}")
            + ("" if stream == "normal" else f"_{stream}_priority")
        )
        out.update({f"{k}{suffix}": v for k, v in detect.items()})
        out[f"ratio{suffix}"] = round(detect["detect_images_per_s"] / model_rate, 3)
        first = out["model_images_per_s_first_batch"]
        out[f"ratio_first_batch{suffix}"] = round(detect["detect_images_per_s"] / first, 3)
    return out


def inference_rates(runtime, files, batch_size: int, warmup: int, steps: int, device) -> dict:
    """Model-only images/s of ``runtime``'s network on batches already on the device:
    ``model_images_per_s``: every batch ``detect`` forms from ``files`` (consecutive, padded
    as it pads them), pass after pass: the reference for detect's ratios, on the same inputs;
    ``model_images_per_s_first_batch``: the first ``batch_size`` files as one batch, repeated
    ``steps`` times (sessions 4-10's reference; COCO128's first batch pads to 1.32 Mpx per
    image, its batches in order to 1.46 on average)."""
    dataset = runtime.dataset(files)
    batches = [collate([dataset[i] for i in range(k, min(k + batch_size, len(files)))]).to(device)
               for k in range(0, len(files), batch_size)]  # fmt: skip
    passes = max(2, -(-steps * batch_size // len(files)))
    return {
        "model_images_per_s": round(
            forward_rate(runtime, batches, len(batches), passes, device), 1
        ),
        "model_images_per_s_first_batch": round(
            forward_rate(runtime, batches[:1], warmup, steps, device), 1
        ),
    }


def forward_rate(runtime, batches: list, warmup: int, repeats: int, device) -> float:
    """Images/s of the network over ``batches`` (on the device) ``repeats`` times, after
    ``warmup`` untimed forwards."""
    net = runtime.network
    with runtime.precision():
        for k in range(warmup):
            batch = batches[k % len(batches)]
            net(batch.images, batch.image_sizes, image_scales=batch.image_scales)
        start = timed(device)
        for _ in range(repeats):
            for batch in batches:
                net(batch.images, batch.image_sizes, image_scales=batch.image_scales)
        return repeats * sum(len(b.meta) for b in batches) / (timed(device) - start)


@contextlib.contextmanager
def decoding_stream(priority: str, device):
    """nvJPEG's stream (``data.device_images``) at 'normal' (rpnkit's) or 'high' priority."""
    from rpnkit.data import device_images

    if priority not in ("normal", "high"):
        raise ValueError(f"unknown --decode-stream {priority!r}: normal, high")
    if device.type != "cuda":
        yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    streams, own = device_images._DECODING_STREAMS, device_images._DECODING_STREAMS.get(index)
    if priority == "high":
        top = torch.cuda.Stream.priority_range()[1]  # (lowest, highest): lower is higher
        streams[index] = torch.cuda.Stream(torch.device("cuda", index), priority=top)
    try:
        yield
    finally:
        streams.pop(index, None)
        if own is not None:
            streams[index] = own


@contextlib.contextmanager
def prefetching(how: str):
    """detect's batches prefetched as rpnkit chooses ('auto'), 'inline' or on a 'thread'."""
    from rpnkit.engine import runner

    own = runner.DevicePrefetcher
    if how not in ("auto", "inline", "thread"):
        raise ValueError(f"unknown --prefetch {how!r}: auto, inline, thread")
    if how == "auto":
        yield
        return

    def prefetcher(batches, device, **options):  # rpnkit's own choice overridden
        return own(batches, device, threaded=how == "thread")

    runner.DevicePrefetcher = prefetcher
    try:
        yield
    finally:
        runner.DevicePrefetcher = own


def as_png(files: list[str], where: Path) -> list[str]:
    """The photographs saved once as PNG files (upright, as they load): the path of images
    that the workers decode and the device resizes (``native`` items)."""
    where.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        png = where / f"{Path(f).stem}.png"
        if not png.exists():
            Image.fromarray(load_rgb(f)).save(png)
        out.append(str(png))
    return out


def detect_rate(args, runtime, files, device) -> dict:
    """``detect`` on the image folder's files, four passes, from the first result on; where
    the caller's thread spends each batch: launching the forward, waiting for the previous
    batch's outputs (``HostCopy.get``), the next batch's copy to the device (``Batch.to``, with
    its decoding; on the prefetching thread when there is one), and the rest."""
    many = files * 4
    spent = {"forward": 0.0, "wait": 0.0, "to": 0.0, "batches": 0}
    net, get, to = runtime.network, streaming.HostCopy.get, Batch.to

    def forward(*a, _own=net.forward, **k):
        start = time.perf_counter()
        out = _own(*a, **k)
        spent["forward"] += time.perf_counter() - start
        spent["batches"] += 1
        return out

    def waiting(self):
        start = time.perf_counter()
        out = get(self)
        spent["wait"] += time.perf_counter() - start
        return out

    def copying(self, *a, **k):
        start = time.perf_counter()
        out = to(self, *a, **k)
        spent["to"] += time.perf_counter() - start
        return out

    net.forward, streaming.HostCopy.get, Batch.to = forward, waiting, copying
    begin = time.perf_counter()
    first, count = None, 0
    try:
        with GpuUtilisation() as gpu:
            for _ in runtime.iter_detections(many, batch_size=args.batch_size):
                count += 1
                if first is None:
                    first = time.perf_counter()
            end = timed(device)
    finally:
        del net.forward
        streaming.HostCopy.get, Batch.to = get, to
    steady = (count - 1) / (end - first)
    per_batch = {k: round(spent[k] / spent["batches"] * 1e3, 1) for k in ("forward", "wait", "to")}
    per_batch["all"] = round((end - begin) / spent["batches"] * 1e3, 1)
    return {"detect_images_per_s": round(steady, 1), "first_result_s": round(first - begin, 2),
            "gpu_util": gpu.mean, "host_ms_per_batch": per_batch}  # fmt: skip


@contextlib.contextmanager
def roi_pooler(name: str):
    """'canvas': the default pooler (the canvas on CUDA, the level loop on the CPU); 'levels':
    every MultiLevelRoIPooler given the level-by-level step instead, while the context lasts."""
    if name not in ("canvas", "levels"):
        raise ValueError(f"unknown pooler {name!r}: canvas or levels")
    original = MultiLevelRoIPooler.forward
    if name == "levels":
        MultiLevelRoIPooler.forward = functools.partialmethod(
            original, pool_levels=pool_sorted_by_level
        )
    try:
        yield
    finally:
        MultiLevelRoIPooler.forward = original


def run_row(args, row: dict, dataset, index, files, device, *, first: bool) -> None:
    """Every case of ``args.cases`` for one backbone / kind / precision (and pooler), into
    ``row``; the cases the pooler does not touch (the loader, torchvision's loop) only in the
    ``first`` row of the kind."""
    backbone, kind, amp, cases = row["backbone"], row["kind"], row["amp"], args.cases.split(",")
    if "loader" in cases and first:
        row["loader"] = loader_only(args, dataset, device)
    model, spec = build(backbone, kind, len(index.class_names), device,
                        channels_last=args.layout == "last")  # fmt: skip
    if "model" in cases:
        row["model"] = model_only(args, model, spec, dataset, amp, device)
    if "model-mix" in cases:
        row["model_mix"] = model_mix(args, model, spec, dataset, amp, device)
    if "train" in cases:
        wanted = args.profile is not None
        name = "-".join([backbone, kind, amp, *([row["pooler"]] if "pooler" in row else [])])
        profile = args.profile / f"{name}.txt" if wanted else None
        row["train"] = end_to_end(args, model, spec, dataset, amp, device, profile)
    if "train-dev" in cases:  # JPEGs decoded on the GPU
        row["train_dev"] = end_to_end(args, model, spec, dataset, amp, device,
                                      decode_on_device=True)  # fmt: skip
    if "train-compile" in cases:
        row["train_compile"] = end_to_end(args, model, spec, dataset, amp, device, compile=True)
    if "model" in row and "train" in row:
        row["train_vs_model"] = round(
            row["train"]["images_per_s"] / row["model"]["images_per_s"], 3
        )
    for case in ("train", "train_dev", "train_compile"):
        if "model_mix" in row and case in row:
            row[f"{case}_vs_model_mix"] = round(
                row[case]["images_per_s"] / row["model_mix"]["images_per_s"], 3
            )
    if "tv-train" in cases and kind == "frcnn" and first:
        row["tv_train"] = torchvision_loop(args, model, index, amp, device)
        if "train" in row:
            row["train_vs_torchvision"] = round(
                row["train"]["images_per_s"] / row["tv_train"]["images_per_s"], 3
            )
    if "infer" in cases and kind == "frcnn":
        row["infer"] = inference(args, model, spec, files, amp, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "coco128"))
    parser.add_argument("--cases", default="model,train,tv-train,infer")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--kinds", default="rpn,frcnn")
    parser.add_argument("--amps", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument(
        "--layout",
        default="auto",
        help="auto (rpnkit's choice: channels-last on CUDA), first, last",
    )
    parser.add_argument("--runs", type=Path, default=Path("/tmp/bench_pipeline"))
    parser.add_argument("--profile", type=Path, default=None, help="folder for profile tables")
    parser.add_argument("--poolers", default="canvas", help="canvas, levels (A/B, Faster R-CNN)")
    parser.add_argument(
        "--groups", default="aspect", help="aspect (rpnkit's: batches of one orientation), none"
    )
    parser.add_argument(
        "--decode", default="device", help="infer: device (rpnkit's on CUDA), workers, or both"
    )
    parser.add_argument(
        "--decode-stream", default="normal", help="infer, device decode: normal, high, or both"
    )
    parser.add_argument(
        "--prefetch",
        default="auto",
        help="infer: auto (rpnkit's: a thread when decoding on the GPU), inline, thread, or both",
    )
    parser.add_argument(
        "--format", choices=["jpeg", "png"], default="jpeg", help="infer: COCO128 saved as PNG"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda", help="cuda (a CPU run only checks the code)")
    args = parser.parse_args()
    device = torch.device(args.device)
    poolers = args.poolers.split(",")
    if unknown := set(poolers) - {"canvas", "levels"}:
        parser.error(f"unknown --poolers {sorted(unknown)}: canvas, levels")
    # cuDNN's autotuner stays off, as in rpnkit train: with COCO's many image shapes it would
    # re-tune every convolution for each new padded size
    index = read_dataset(args.data, split="train2017")
    dataset = DetectionDataset(index, train_transforms(800, 1333, 0.5))
    files = sorted(str(r.path) for r in index.records)
    if args.format == "png":  # the workers decode, the device resizes (``native`` items)
        files = as_png(files, args.runs / "png")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {"device": name, "torch": torch.__version__,
               "batch": args.batch_size, "workers": args.workers,
               "layout": args.layout, "groups": args.groups, "format": args.format,
               "rows": []}  # fmt: skip
    for backbone in args.backbones.split(","):
        for kind in args.kinds.split(","):
            for amp in args.amps.split(","):
                for i, pooler in enumerate(poolers if kind == "frcnn" else ["canvas"]):
                    row = {"backbone": backbone, "kind": kind, "amp": amp}
                    if kind == "frcnn":  # an RPN has no RoI pooler
                        row["pooler"] = pooler
                    with roi_pooler(pooler):
                        run_row(args, row, dataset, index, files, device, first=i == 0)
                    print(json.dumps(row), flush=True)
                    results["rows"].append(row)
                    torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
