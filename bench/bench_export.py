"""Deployment speed: ONNX Runtime against PyTorch, and torch.compile against eager.

    PYTHONPATH=src python bench/bench_export.py --cases onnx --json cpu.json          # the CPU
    PYTHONPATH=src python bench/bench_export.py --cases compile onnx --json gpu.json  # a GPU

Model: effnet-lite0-fpn (random weights: the speed does not depend on them; frozen batch norms
calibrated on a probe so that activations stay in range, and the class layer scaled so that
about 100 detections per image pass the 0.05 threshold, the post-processing's full load). Images:
COCO128's first photographs (``--data``).

Cases (``--cases``):
- ``onnx``: the RPN and the Faster R-CNN exported by ``rpnkit.export`` (batch norms folded,
  anchors and NMS in the graph), run by ONNX Runtime (CPU provider, and the CUDA provider where
  the installed onnxruntime has it), against rpnkit's own forward in PyTorch on the same folded
  weights and the same padded uint8 batch, at ``--size`` px (longer side; padded square) and
  batch ``--batches``. Threads: torch's (``--threads``) for both. The outputs are compared
  (counts equal, boxes at IoU >= 0.99) before timing.
- ``compile`` (CUDA): ``torch.compile`` (inductor) of the whole model against eager at
  800x1333, batch ``--batch-size``, bf16 (or ``--precision fp32``): inference of the folded
  detector and of the RPN, the training step (the Trainer's own, forward, backward and
  update), and the proposal selection alone on fixed head outputs (``--compile-cases`` picks
  some); each compiled output compared with eager (``agreement``: same counts, eager's boxes
  found at IoU >= 0.99); graph breaks counted with ``torch._dynamo.explain``. Compilation
  time is reported apart and not in the rate. On the CPU the case is a dry run of the same
  code (``--backend aot_eager``, or inductor to see its rounding).

Timing: median of ``--repeats`` runs after warm-up; CUDA synchronised around each run. A case
that would start after ``--deadline-s`` seconds is skipped and says so.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import build, timed, train_config

from rpnkit.data import DetectionDataset, collate, read_dataset, train_transforms
from rpnkit.data.images import load_rgb
from rpnkit.engine.device import compile_in_place, fold_for_inference
from rpnkit.engine.trainer import Trainer
from rpnkit.modeling.boxes import box_iou
from rpnkit.modeling.rpn import select_proposals
from rpnkit.modeling.sizes import padded_size

STARTED = time.perf_counter()


def median_seconds(fn, device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = timed(device)
        fn()
        runs.append(timed(device) - start)
    return statistics.median(runs)


def photo_batch(data: Path, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO128's first ``batch`` photographs, longer side ``size``, in one zero-padded uint8
    (B, 3, S, S) batch with their (B, 2) sizes."""
    files = sorted((data / "images" / "train2017").glob("*.jpg"))[:batch]
    crops = []
    for f in files:
        image = torch.from_numpy(load_rgb(f)).permute(2, 0, 1)  # (3, H, W) uint8
        scale = size / max(image.shape[1:])
        h, w = (max(1, round(n * scale)) for n in image.shape[1:])
        resized = torch.nn.functional.interpolate(image[None].float(), size=(h, w), mode="bilinear")
        crops.append(resized[0].round().clamp(0, 255).to(torch.uint8))
    side = padded_size(size, size)
    images = torch.zeros(len(crops), 3, *side, dtype=torch.uint8)
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = c
    return images, torch.tensor([c.shape[1:] for c in crops], dtype=torch.int64)


def bench_model(kind: str, device) -> torch.nn.Module:
    model, _ = build("effnet", "frcnn" if kind == "detector" else "rpn", 81, device,
                     channels_last=False)  # fmt: skip
    if kind == "detector":
        with torch.no_grad():
            torch.nn.init.normal_(model.roi_heads.box_head.cls_score.weight, std=0.3)
    return model.eval()


def same_outputs(got, want) -> bool:
    """Counts equal and every valid box found at IoU >= 0.99 (the suite's bar)."""
    got, want = [torch.as_tensor(t).cpu() for t in got], [t.cpu() for t in want]
    if not torch.equal(got[-1], want[-1]):
        return False
    for i, n in enumerate(want[-1].tolist()):
        if n and not (box_iou(got[0][i, :n], want[0][i, :n]).max(dim=1).values >= 0.99).all():
            return False
    return True


def agreement(got, want) -> dict:
    """How far two (boxes (B, K, 4), counts (B,)) outputs differ, where they are not equal bit
    for bit (compiled kernels round differently, bf16 more so): the images with the same
    count, the share of ``want``'s boxes that ``got`` has at IoU >= 0.99, and the largest
    distance (px, L-inf) from one of ``want``'s boxes to the nearest of ``got``'s."""
    got, want = [t.detach().float().cpu() for t in got], [t.detach().float().cpu() for t in want]
    same_count = (got[1] == want[1]).float().mean().item()
    found, total, worst = 0, 0, 0.0
    for i, (n, m) in enumerate(zip(want[1].long().tolist(), got[1].long().tolist())):
        total += n
        if n and m:
            iou = box_iou(want[0][i, :n], got[0][i, :m]).max(dim=1).values
            found += int((iou >= 0.99).sum())
            gap = (want[0][i, :n, None] - got[0][i, None, :m]).abs().amax(dim=2)  # (n, m)
            worst = max(worst, gap.min(dim=1).values.max().item())  # nearest box, any slot
    return {
        "same_count": round(same_count, 3),
        "boxes_found": round(found / max(total, 1), 4),
        "max_abs_px": round(worst, 4),
        "bit_equal": bool(torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])),
    }


def onnx_cases(args) -> list[dict]:
    import onnxruntime as ort

    from rpnkit.export import ExportableModel, save_onnx

    providers = [p for p in ("CPUExecutionProvider", "CUDAExecutionProvider")
                 if p in ort.get_available_providers()]  # fmt: skip
    rows, cpu = [], torch.device("cpu")
    for kind in ("rpn", "detector"):
        model = ExportableModel(bench_model(kind, cpu))
        path = Path(tempfile.mkdtemp()) / f"{kind}.onnx"
        save_onnx(model, path)
        for provider in providers:
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), options, providers=[provider])
            for batch in args.batches:
                if time.perf_counter() - STARTED > args.deadline_s:
                    rows.append({"case": f"onnx {kind} b{batch}", "skipped": "deadline"})
                    continue
                rows.append(onnx_row(session, model, kind, batch, provider, args))
                print(rows[-1], flush=True)
    return rows


def onnx_row(session, model, kind: str, batch: int, provider: str, args) -> dict:
    cpu = torch.device("cpu")
    images, sizes = photo_batch(args.data, batch, args.size)
    feeds = {"images": images.numpy(), "image_sizes": sizes.numpy()}
    ok = same_outputs(session.run(None, feeds), model.reference(images, sizes))
    ort_s = median_seconds(lambda: session.run(None, feeds), cpu, args.repeats)
    torch_s = median_seconds(lambda: model.reference(images, sizes), cpu, args.repeats)
    return {
        "case": f"onnx {kind} b{batch} {args.size}px", "provider": provider,
        "threads": torch.get_num_threads(), "same_outputs": ok,
        "pytorch_ms": round(1e3 * torch_s, 1), "onnxruntime_ms": round(1e3 * ort_s, 1),
        "speedup": round(torch_s / ort_s, 2),
    }  # fmt: skip


def graph_breaks(fn, *inputs) -> int:
    return torch._dynamo.explain(fn)(*inputs).graph_break_count


def compare_inference(kind: str, images, sizes, args, device) -> dict:
    model = bench_model(kind, device)
    fold_for_inference(model)
    compiled = compile_in_place(copy.deepcopy(model), args.backend)

    def run(m):
        bf16 = args.precision == "bf16"
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = m(images, sizes)
        found = out.detections if kind == "detector" else out.proposals
        return found.boxes, found.num

    start = timed(device)
    got = run(compiled)  # compiles
    compile_s = timed(device) - start
    eager_s = median_seconds(lambda: run(model), device, args.repeats)
    compiled_s = median_seconds(lambda: run(compiled), device, args.repeats)
    with torch.no_grad():
        breaks = graph_breaks(lambda i, s: model(i, s), images, sizes)
    return {
        "case": f"compile {kind} inference b{len(images)} {args.precision}",
        "graph_breaks": breaks,
        "agreement": agreement(got, run(model)), "compile_s": round(compile_s, 1),
        "eager_ms": round(1e3 * eager_s, 2), "compiled_ms": round(1e3 * compiled_s, 2),
        "speedup": round(eager_s / compiled_s, 3),
    }  # fmt: skip


def training_step(args, dataset, device, compiled: bool) -> tuple[float, float, int | None]:
    """The Trainer's own step: (median seconds, first step's seconds, graph breaks)."""
    model, spec = build("effnet", "frcnn", 81, device, channels_last=False)
    compile = args.backend if compiled else False
    config = dataclasses.replace(train_config(args, args.precision, 10**6), compile=compile)
    trainer = Trainer(model, dataset, config, out_dir=Path(tempfile.mkdtemp()), spec=spec,
                      device=device, progress=False)  # fmt: skip
    trainer._set_up()
    batch = collate([dataset[i] for i in range(args.batch_size)]).to(device)
    start = timed(device)
    trainer._step(batch, 0)
    first_s = timed(device) - start
    seconds = median_seconds(lambda: trainer._step(batch, 1), device, args.repeats)
    trainer.watch.flush()
    breaks = None
    if not compiled:
        model.train()
        breaks = graph_breaks(
            lambda b: sum(model(b.images, b.image_sizes, b.targets).losses.values()), batch
        )
    return seconds, first_s, breaks


def compare_training(args, dataset, device) -> dict:
    eager_s, _, breaks = training_step(args, dataset, device, False)
    compiled_s, compile_s, _ = training_step(args, dataset, device, True)
    return {
        "case": f"compile detector training step b{args.batch_size} {args.precision}",
        "graph_breaks": breaks,
        "compile_s": round(compile_s, 1), "eager_ms": round(1e3 * eager_s, 2),
        "compiled_ms": round(1e3 * compiled_s, 2), "speedup": round(eager_s / compiled_s, 3),
    }  # fmt: skip


def compare_selection(images, sizes, args, device) -> dict:
    """The proposal selection alone on the RPN's head outputs of the batch."""
    model = bench_model("rpn", device)
    fold_for_inference(model)
    rpn = model.rpn
    with torch.no_grad():
        features = model.features(images, sizes)
        objectness, deltas = rpn.head.flatten(*rpn.head(features))
        feature_sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        anchors = rpn.anchor_generator(feature_sizes, device=device)
    level_sizes = rpn.anchor_generator.level_sizes(feature_sizes)
    config = rpn.config.test_proposals

    def select(o, d):
        return select_proposals(o, d, anchors, level_sizes, sizes, config, box_coder=rpn.box_coder)

    compiled = torch.compile(select, backend=args.backend)
    start = timed(device)
    got = compiled(objectness, deltas)
    compile_s = timed(device) - start
    want = select(objectness, deltas)
    eager_s = median_seconds(lambda: select(objectness, deltas), device, args.repeats)
    compiled_s = median_seconds(lambda: compiled(objectness, deltas), device, args.repeats)
    return {
        "case": f"compile proposal selection b{len(images)}",
        "graph_breaks": graph_breaks(select, objectness, deltas),
        "agreement": agreement((got.boxes, got.num), (want.boxes, want.num)),
        "compile_s": round(compile_s, 1), "eager_ms": round(1e3 * eager_s, 3),
        "compiled_ms": round(1e3 * compiled_s, 3), "speedup": round(eager_s / compiled_s, 3),
    }  # fmt: skip


def compile_cases(args) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a dry run
    torch.backends.cudnn.benchmark = False  # re-tunes per shape; both sides the same
    images, sizes = photo_batch(args.data, args.batch_size, 1333)
    images, sizes = images[:, :, :800].contiguous().to(device), sizes.clamp(max=800).to(device)
    dataset = DetectionDataset(read_dataset(args.data, split="train2017"),
                               train_transforms(800, 1333, 0.5))  # fmt: skip
    steps = {
        "selection": lambda: compare_selection(images, sizes, args, device),
        "detector": lambda: compare_inference("detector", images, sizes, args, device),
        "training": lambda: compare_training(args, dataset, device),
        "rpn": lambda: compare_inference("rpn", images, sizes, args, device),
    }
    rows = []
    for step in (steps[name] for name in args.compile_cases):
        if time.perf_counter() - STARTED > args.deadline_s:
            rows.append({"case": "compile (remaining)", "skipped": "deadline"})
            break
        rows.append(step())
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco128"))
    parser.add_argument("--cases", nargs="+", default=["onnx"], choices=["onnx", "compile"])
    parser.add_argument("--size", type=int, default=640, help="ONNX case: longer side, px")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-size", type=int, default=8, help="compile cases")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backend", default="inductor", help="compile: aot_eager for a dry run")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="compile")
    parser.add_argument(
        "--compile-cases", nargs="+", default=["selection", "detector", "training", "rpn"],
        choices=["selection", "detector", "training", "rpn"],
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=0)  # for train_config
    parser.add_argument("--deadline-s", type=float, default=1e9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases:
        rows += onnx_cases(args) if case == "onnx" else compile_cases(args)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    meta = {"torch": torch.__version__, "device": gpu, "threads": torch.get_num_threads()}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
