"""Images decoded and transformed on the model's device (``decode_on_device``): the same boxes
and sizes as the workers' path, pixels within the decoders' and resamplers' rounding, every
image the CPU path loads still loading. Run here with torchvision's CPU decoder; the nvJPEG
path is checked in tests/test_gpu.py."""

import csv
import dataclasses
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import box_iou

import rpnkit
from rpnkit.data import (
    DataError,
    DetectionDataset,
    EmptyBatch,
    ImageList,
    collate,
    device_images,
    eval_transforms,
    read_dataset,
    train_transforms,
)
from rpnkit.data.dataset import Unreadable
from rpnkit.data.device_images import (
    EncodedImages,
    JpegHeader,
    PendingJpeg,
    apply_step,
    read_jpeg,
    upright,
)
from rpnkit.data.images import allow_large_images, load_rgb
from rpnkit.data.records import DatasetIndex, Record, SkippedSample
from rpnkit.data.transforms import Compose, Flip, HorizontalFlip, Resize, ResizeShortest
from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.modeling.presets import build_model, preset_config

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def pair(index, transforms, **kw):
    """The workers' dataset and the device-decoding one, same seed."""
    return (
        DetectionDataset(index, transforms, seed=5, **kw),
        DetectionDataset(index, transforms, seed=5, decode_on_device=True, **kw),
    )


def assert_same_batch(cpu_items, device_items, max_diff=2):
    a = collate(cpu_items).to("cpu")
    b = collate(device_items).to("cpu")
    assert b.encoded is None and b.images is not None
    assert torch.equal(a.targets.boxes, b.targets.boxes)
    assert torch.equal(a.image_sizes, b.image_sizes)
    assert torch.equal(a.image_scales, b.image_scales)
    assert a.images.shape == b.images.shape and b.images.dtype == torch.uint8
    diff = (a.images.int() - b.images.int()).abs()
    assert diff.max() <= max_diff
    for img, (h, w) in zip(b.images, b.image_sizes.tolist()):  # padding stays zero
        assert img[:, h:].eq(0).all() and img[:, :, w:].eq(0).all()
    return a, b


def test_coco128_batches_match_the_worker_path():
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:24]
    cpu, dev = pair(index, train_transforms(512, 853, 0.5))
    assert all("jpeg" in dev[i] for i in range(len(dev)))  # every COCO file left encoded
    flips = 0
    for start in range(0, 24, 6):
        ids = range(start, start + 6)
        assert_same_batch([cpu[i] for i in ids], [dev[i] for i in ids])
        flips += sum(Flip() in dev[i]["jpeg"][1] for i in ids)
    assert 0 < flips < 24  # both branches of the random flip were met


def test_planned_boxes_equal_the_pixel_path_with_multiscale_and_epochs():
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:8]
    transforms = Compose((ResizeShortest((320, 480, 640), 1000), HorizontalFlip(0.5)))
    cpu, dev = pair(index, transforms)
    for epoch in (0, 3):
        cpu.set_epoch(epoch), dev.set_epoch(epoch)
        for i in range(8):
            a, b = cpu[i], dev[i]
            assert torch.equal(a["boxes"], b["boxes"]) and a["scale"] == b["scale"]
            assert tuple(a["image"].shape[1:]) == b["size"]


def write_jpeg(path: Path, pixels: np.ndarray, orientation: int = 1, **save) -> Path:
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    img.save(path, "JPEG", quality=95, exif=exif.tobytes(), **save)
    return path


def pattern(h=48, w=80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 5 % 256, (x + y) * 2 % 256], -1).astype(np.uint8)


def index_of(paths: list[Path]) -> DatasetIndex:
    records = []
    for i, p in enumerate(paths):
        h, w = load_rgb(p).shape[:2]
        box = np.array([[w * 0.1, h * 0.2, w * 0.6, h * 0.7]], np.float32)
        records.append(
            Record(p, i, w, h, box, np.array([1]), np.array([False]), np.array([1.0], np.float32))
        )
    return DatasetIndex(records, ["thing"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_displayed(tmp_path, orientation):
    path = write_jpeg(tmp_path / "o.jpg", pattern(), orientation)
    header = read_jpeg(path)
    assert header is not None and header.orientation == orientation
    assert header.size == load_rgb(path).shape[:2]
    raw = decode_jpeg(header.data, mode=ImageReadMode.RGB)
    # torchvision's CPU decoder turns it itself: the same decoded pixels, exactly
    turned = decode_jpeg(header.data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    assert torch.equal(upright(raw, orientation), turned)
    cpu, dev = pair(index_of([path]), train_transforms(64, 128, 0.5))
    assert_same_batch([cpu[0]], [dev[0]])


def test_formats_the_device_does_not_take_are_decoded_by_the_workers(tmp_path):
    rgb = pattern()
    paths = [
        write_jpeg(tmp_path / "plain.jpg", rgb),
        write_jpeg(tmp_path / "gray.jpg", rgb[..., 0].copy()),
        write_jpeg(tmp_path / "progressive.jpg", rgb, progressive=True),
        tmp_path / "cmyk.jpg",
        tmp_path / "png.png",
        tmp_path / "palette.png",
        tmp_path / "trailing.jpg",
    ]
    Image.fromarray(rgb).convert("CMYK").save(paths[3], "JPEG")
    Image.fromarray(rgb).save(paths[4])
    Image.fromarray(rgb).convert("P").save(paths[5])
    paths[6].write_bytes(paths[0].read_bytes() + b"extra bytes after the end marker")
    left_encoded = [read_jpeg(p) is not None for p in paths]
    assert left_encoded == [True, True, False, False, False, False, False]
    cpu, dev = pair(index_of(paths), train_transforms(64, 128, 0.5))
    items = [dev[i] for i in range(len(paths))]
    assert ["jpeg" in it for it in items] == left_encoded
    # the others decoded by the worker as they are, their resize and flip left to the device
    assert ["native" in it for it in items] == [not e for e in left_encoded]
    assert all(it["native"][0].shape == (3, 48, 80) for it in items if "native" in it)
    batch = collate(items)
    assert len(batch.encoded.jpegs) == 2 and len(batch.encoded.pixels) == 5
    assert all(steps for _, _, steps in batch.encoded.pixels)  # Resize, at least
    assert_same_batch([cpu[i] for i in range(len(paths))], items)


def test_photographs_in_other_formats_are_resized_and_flipped_on_the_device(tmp_path):
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:12]
    pngs = [tmp_path / f"{record.path.stem}.png" for record in index.records]
    for record, png in zip(index.records, pngs):  # the same photographs as PNG files
        Image.fromarray(load_rgb(record.path)).save(png)
    index.records = [dataclasses.replace(r, path=png) for r, png in zip(index.records, pngs)]
    cpu, dev = pair(index, train_transforms(800, 1333, 0.5))
    assert all("native" in dev[i] for i in range(12)) and dev.leaves_pixels_to_device
    flips = sum(Flip() in dev[i]["native"][1] for i in range(12))
    assert 0 < flips < 12
    for start in (0, 6):  # enlarged to 800 px on the device, as Pillow's bilinear filter does
        assert_same_batch([cpu[i] for i in range(start, start + 6)],
                          [dev[i] for i in range(start, start + 6)])  # fmt: skip
    workers, shrunk = pair(index, train_transforms(256, 427, 0.5))  # fewer bytes resized
    assert not any("native" in shrunk[i] for i in range(12))
    assert_same_batch([workers[i] for i in range(6)], [shrunk[i] for i in range(6)], max_diff=0)
    batch = collate([dev[0], dev[1]])
    moved = batch._map(lambda t: t.clone(), batch.targets)  # as pinning and copying map it
    assert [steps for *_, steps in moved.encoded.pixels] == [
        dev[0]["native"][1],
        dev[1]["native"][1],
    ]


def test_files_given_one_by_one_in_other_formats_are_resized_on_the_device(tmp_path):
    png = tmp_path / "b.png"
    Image.fromarray(pattern()).save(png)
    resize = eval_transforms(64, 128)
    item = ImageList([png], resize, decode_on_device=True)[0]
    image, steps = item["native"]
    assert image.shape == (3, 48, 80) and item["size"] == (64, 107) and steps
    assert item["file_name"] == "b.png" and item["source"] == png
    on_cpu = ImageList([png], resize)[0]
    assert_same_batch([on_cpu], [item])
    in_memory = ImageList([pattern()], resize, decode_on_device=True)[0]
    assert "native" not in in_memory and in_memory["image"].shape == (3, 64, 107)
    shrunk = ImageList([png], eval_transforms(32, 64), decode_on_device=True)[0]
    assert "native" not in shrunk and shrunk["image"].shape == (3, 32, 53)


def test_unreadable_files_are_reported_as_on_the_cpu_path(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", pattern())
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    index = index_of([good])
    first = index.records[0]
    index.records += [
        dataclasses.replace(first, path=tmp_path / "gone.jpg"),
        dataclasses.replace(first, path=bad),
        dataclasses.replace(first, width=81),  # the annotation disagrees with the file
    ]
    _, dev = pair(index, train_transforms(64, 128, 0.5))
    with warnings.catch_warnings():  # markers only: the batches' collector warns of them
        warnings.simplefilter("error", SkippedSample)
        items = [dev[i] for i in range(4)]
    assert "jpeg" in items[0]
    messages = [str(it) for it in items[1:]]
    assert "gone.jpg: image file not found" in messages[0]
    assert "truncated.jpg: unreadable or truncated image" in messages[1]
    assert "81x48" in messages[2]
    allow_large_images(100)  # Pillow refuses > 200 pixels: the worker path reports it
    try:
        assert isinstance(dev[0], Unreadable) and "pixel" in str(dev[0])
    finally:
        allow_large_images(DEFAULT_MAX_PIXELS)
    batch = collate(items)
    assert len(batch.skipped) == 3 and batch.image_sizes.shape == (1, 2)
    assert batch.to("cpu").images.shape[0] == 1


def test_a_jpeg_the_device_cannot_decode_names_its_file():
    broken = JpegHeader(
        torch.tensor([0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9], dtype=torch.uint8), 1, (4, 4)
    )
    encoded = EncodedImages(1, (32, 32), [PendingJpeg(0, broken, (), "photos/broken.jpg")])
    with pytest.raises(DataError, match=r"photos/broken\.jpg: .* on cpu .* nor by Pillow"):
        encoded.decode(torch.device("cpu"))


def test_what_the_device_decoder_refuses_pillow_decodes(tmp_path, monkeypatch):
    path = write_jpeg(tmp_path / "a.jpg", pattern(), orientation=6)
    cpu, dev = pair(index_of([path, path]), train_transforms(64, 128, 0.0))
    expected = collate([cpu[0], cpu[1]]).to("cpu")

    def refuse(data, device):
        raise RuntimeError("nvjpeg: unsupported")

    monkeypatch.setattr(device_images, "_decode", refuse)
    got = collate([dev[0], dev[1]]).to("cpu")
    assert (expected.images.int() - got.images.int()).abs().max() <= 2


def test_pixel_steps_on_tensors_follow_the_numpy_ones():
    image = pattern(37, 61)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    for step in (Resize(20, 33), Resize(74, 122), Flip()):
        expected = torch.from_numpy(np.array(step.pixels(image))).permute(2, 0, 1)
        got = apply_step(step, tensor)
        assert got.shape == expected.shape
        assert (got.int() - expected.int()).abs().max() <= 1


def test_proposals_follow_the_same_plan():
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:4]
    rng = np.random.default_rng(0)
    proposals = {
        str(r.path): (rng.random((5, 4)) * 100 + [0, 0, 100, 100]).astype(np.float32)
        for r in index.records
    }
    cpu, dev = pair(index, train_transforms(320, 533, 0.5), proposals=proposals)
    for i in range(4):
        assert torch.equal(cpu[i]["proposals"], dev[i]["proposals"])
        assert torch.equal(cpu[i]["boxes"], dev[i]["boxes"])


def _losses(tmp_path, name, decode_on_device):
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:8]
    dataset = DetectionDataset(index, train_transforms(160, 256, 0.5), seed=1)
    config = TrainConfig(
        steps=3, batch_size=4, optimizer="adamw", lr=1e-3, warmup_steps=1, log_every=1,
        decode_on_device=decode_on_device,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    train(model, dataset, config, out_dir=tmp_path / name, progress=False)
    assert dataset.decode_on_device == decode_on_device
    with open(tmp_path / name / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_training_on_device_decoded_batches_follows_the_worker_path(tmp_path):
    workers, device = _losses(tmp_path, "cpu", False), _losses(tmp_path, "dev", True)
    assert len(device) == 3
    assert device == pytest.approx(workers, rel=2e-2)  # pixels a level apart, same boxes


def test_proposals_of_a_folder_decoded_on_the_device(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:6]:
        (folder / src.name).symlink_to(src.resolve())
    torch.manual_seed(0)
    ckpt = save_model(
        tmp_path / "rpn.safetensors",
        build_model(preset_config("tiny")),
        ModelSpec("rpn", preset_config("tiny"), ("thing",)),
    )
    runs = {
        flag: rpnkit.load(ckpt, "cpu", short_side=160, max_size=256, decode_on_device=flag).propose(
            folder, top=20
        )
        for flag in (False, True)
    }
    assert [r.file_name for r in runs[True]] == [r.file_name for r in runs[False]]
    assert len(runs[True]) == 6
    listed = rpnkit.load(ckpt, "cpu", short_side=160, max_size=256, decode_on_device=True)
    files = sorted(folder.iterdir())
    assert "jpeg" in listed.dataset(files)[0]  # a list of files is decoded on the device too
    workers = rpnkit.load(ckpt, "cpu", short_side=160, max_size=256, decode_on_device=False)
    for a, b in zip(listed.propose(files, top=20), workers.propose(files, top=20)):
        assert a.file_name == b.file_name  # a list is not grouped: compare lists
        assert box_iou(a.boxes[:10], b.boxes).max(1).values.min() > 0.95
    for a, b in zip(runs[False], runs[True]):  # the same image, a level of rounding apart
        assert a.boxes.shape == b.boxes.shape  # near ties may swap ranks: found, not in order
        assert box_iou(a.boxes[:10], b.boxes).max(1).values.min() > 0.95


def _batches(n, fail_at=None):
    from rpnkit.data import SyntheticShapes

    items = SyntheticShapes(2 * n, image_size=64)
    for i in range(n):
        if i == fail_at:
            raise DataError(f"batch {i}: unreadable")
        yield collate([items[2 * i], items[2 * i + 1]]) if i % 3 else EmptyBatch([f"x{i}"])


def test_the_prefetch_thread_keeps_order_raises_the_loaders_errors_and_stops():
    from rpnkit.engine.streaming import DevicePrefetcher

    cpu = torch.device("cpu")
    expected = list(_batches(7))
    got = list(DevicePrefetcher(_batches(7), cpu, threaded=True))
    assert [type(b) for b in got] == [type(b) for b in expected]
    for a, b in zip(expected, got):
        if isinstance(a, EmptyBatch):
            assert a.skipped == b.skipped
        else:
            assert torch.equal(a.images, b.images) and torch.equal(a.targets.boxes, b.targets.boxes)
    with pytest.raises(DataError, match="batch 4: unreadable"):
        list(DevicePrefetcher(_batches(7, fail_at=4), cpu, threaded=True))
    stream = iter(DevicePrefetcher(_batches(50), cpu, ahead=1, threaded=True))
    next(stream), next(stream)
    stream.close()  # a run that stops early: the thread ends, nothing is left waiting
    assert not any(t.name.startswith("Thread") and t.is_alive() for t in threading.enumerate())


def test_a_closed_prefetcher_does_not_wait_forever_for_a_loader_that_hangs(monkeypatch):
    from rpnkit.engine import streaming

    release = threading.Event()

    def hanging():
        yield from _batches(2)
        release.wait(30)  # a loader whose workers are gone (Ctrl-C), until its watchdog fires
        yield from _batches(2)

    monkeypatch.setattr(streaming, "STOP_WAIT_S", 0.3)
    stream = iter(streaming.DevicePrefetcher(hanging(), torch.device("cpu"), threaded=True))
    next(stream)
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 5
    release.set()  # the thread left behind ends at its next batch
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.daemon:
            thread.join(5)


def test_decode_option_reaches_the_library():
    from rpnkit.cli import build_parser
    from rpnkit.cli.options import decode_on_device
    from rpnkit.cli.train import train_config

    parser = build_parser()
    data = ["--data", "x"]
    for given, expected in (
        ([], None),
        (["--decode", "device"], True),
        (["--decode", "workers"], False),
    ):
        args = parser.parse_args(["train", *data, *given])
        assert train_config(args).decode_on_device is expected
        args = parser.parse_args(["detect", "photos", "--checkpoint", "c", *given])
        assert decode_on_device(args) is expected


def test_by_default_training_decodes_on_the_device_only_on_cuda(tmp_path):
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:4]
    dataset = DetectionDataset(index, train_transforms(96, 128, 0.5))
    config = TrainConfig(steps=1, batch_size=2, log_every=1, warmup_steps=0)
    train(build_model(preset_config("tiny")), dataset, config, out_dir=tmp_path, progress=False)
    assert dataset.decode_on_device is False  # the CPU: Pillow in the workers


def test_by_default_decoding_is_on_the_device_for_cuda_only(tmp_path):
    from rpnkit.engine.device import decodes_on_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert decodes_on_device(None, cuda) and not decodes_on_device(None, cpu)
    assert not decodes_on_device(False, cuda) and decodes_on_device(True, cpu)
    tiny = preset_config("tiny")
    spec = ModelSpec("rpn", tiny, ("a",))
    ckpt = save_model(tmp_path / "rpn.safetensors", build_model(tiny), spec)
    assert rpnkit.load(ckpt, "cpu").decode_on_device is False
    assert rpnkit.load(ckpt, "cpu", decode_on_device=True).decode_on_device is True


def test_the_devices_own_failures_are_raised_not_blamed_on_the_file(tmp_path, monkeypatch):
    path = write_jpeg(tmp_path / "a.jpg", pattern())
    _, dev = pair(index_of([path]), train_transforms(64, 128, 0.0))

    def out_of_memory(data, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(device_images, "_decode", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        collate([dev[0]]).to("cpu")


# --- where the rule reaches: tiles, the prefetching thread, alternating proposals, validation


def _tiny_rpn_checkpoint(tmp_path):
    tiny = preset_config("tiny")
    torch.manual_seed(0)
    spec = ModelSpec("rpn", tiny, ("thing",))
    return save_model(tmp_path / "rpn.safetensors", build_model(tiny), spec)


def test_sliced_inference_cuts_tiles_on_the_host_even_when_decoding_on_the_device(tmp_path):
    photo = write_jpeg(tmp_path / "wide.jpg", np.tile(pattern(), (4, 6, 1)))  # 192 x 480
    ckpt = _tiny_rpn_checkpoint(tmp_path)
    runs = [
        rpnkit.load(ckpt, "cpu", decode_on_device=flag).propose([photo], top=30, tile_size=128)
        for flag in (False, True)
    ]
    assert torch.equal(runs[0][0].boxes, runs[1][0].boxes)
    assert torch.equal(runs[0][0].scores, runs[1][0].scores)
    runtime = rpnkit.load(ckpt, "cpu", decode_on_device=True)
    encoded = runtime.dataset([photo])  # a ready-made dataset whose JPEGs stay encoded
    with pytest.raises(ValueError, match="decode_on_device=False"):
        runtime.propose(encoded, top=30, tile_size=128)
    png = tmp_path / "wide.png"
    Image.fromarray(load_rgb(photo)).save(png)
    native = runtime.dataset([png])  # decoded by the workers, resized on the device
    assert native.leaves_pixels_to_device
    with pytest.raises(ValueError, match="decode_on_device=False"):
        runtime.propose(native, top=30, tile_size=128)
    assert not rpnkit.load(ckpt, "cpu").dataset([png]).leaves_pixels_to_device


def test_only_datasets_that_leave_pixel_steps_to_the_device_say_so(tmp_path):
    jpg = write_jpeg(tmp_path / "a.JPG", pattern())
    png = tmp_path / "b.png"
    Image.fromarray(pattern()).save(png)
    resize = eval_transforms(64, 128)
    assert ImageList([jpg], resize, decode_on_device=True).leaves_pixels_to_device
    assert ImageList([png], resize, decode_on_device=True).leaves_pixels_to_device
    assert not ImageList([jpg, png], resize, decode_on_device=False).leaves_pixels_to_device
    assert not ImageList([pattern()], resize, decode_on_device=True).leaves_pixels_to_device
    custom = Compose((lambda item: item,))  # a custom transform: the workers decode
    assert not ImageList([jpg], custom, decode_on_device=True).leaves_pixels_to_device
    for path in (jpg, png):
        dataset = DetectionDataset(index_of([path]), resize, decode_on_device=True)
        assert dataset.leaves_pixels_to_device
    assert not DetectionDataset(index_of([jpg]), resize).leaves_pixels_to_device


_MADE: list = []


class _Recorder:
    """``runner.DevicePrefetcher`` that records how it was asked to prefetch and its closing;
    it prefetches inline, as the real one on the CPU."""

    def __init__(self, batches, device, threaded=None):
        self.batches, self.device, self.threaded, self.closed = batches, device, threaded, False
        _MADE.append(self)

    def __iter__(self):
        try:
            for batch in self.batches:
                yield batch.to(self.device) if hasattr(batch, "to") else batch
        finally:
            self.closed = True


def test_run_batches_prefetches_inline_on_the_cpu_and_closes_the_prefetcher_on_early_stop(
    tmp_path, monkeypatch
):
    from rpnkit.engine import runner

    paths = [write_jpeg(tmp_path / f"{i}.jpg", pattern()) for i in range(4)]
    dataset = ImageList(paths, eval_transforms(64, 128), decode_on_device=True)
    monkeypatch.setattr(runner, "DevicePrefetcher", _Recorder)
    _MADE.clear()
    forward = runner.proposal_forward(build_model(preset_config("tiny")).eval())
    stream = runner.run_batches(forward, dataset, batch_size=1, device=torch.device("cpu"))
    next(stream)
    stream.close()  # a caller that stops after the first result
    (made,) = _MADE
    assert made.threaded is False and made.closed


def test_alternating_proposals_and_validation_decode_where_training_does(tmp_path, monkeypatch):
    from rpnkit.engine import alternating
    from rpnkit.engine.fit import make_evaluator

    seen = {}

    class Spy(alternating.Predictor):
        def __init__(self, *args, **options):
            seen.update(options)
            super().__init__(*args, **options)

    monkeypatch.setattr(alternating, "Predictor", Spy)
    paths = [write_jpeg(tmp_path / f"{i}.jpg", pattern()) for i in range(2)]
    tiny = preset_config("tiny")
    alternating.write_proposals(build_model(tiny), ModelSpec("rpn", tiny, ("thing",)),
                                index_of(paths), tmp_path / "p.json", short_side=64, max_size=128,
                                batch_size=2, device="cpu", progress=False,
                                decode_on_device=True)  # fmt: skip
    assert seen["decode_on_device"] is True
    dataset = DetectionDataset(index_of(paths), eval_transforms(64, 128))
    spec = ModelSpec("rpn", tiny, ("thing",))
    for choice, expected in ((None, False), (True, True), (False, False)):
        make_evaluator(spec, dataset, batch_size=2, device=torch.device("cpu"),
                       decode_on_device=choice)  # fmt: skip
        assert dataset.decode_on_device is expected  # None: by device, the CPU's workers


def test_recall_of_a_dataset_decoded_on_the_device_matches_the_workers(tmp_path):
    index = read_dataset(COCO128, split="train2017")
    index.records = index.records[:6]
    ckpt = _tiny_rpn_checkpoint(tmp_path)
    reports = {
        flag: rpnkit.load(ckpt, "cpu", short_side=160, max_size=256, decode_on_device=flag)
        .evaluate(index, batch_size=3, progress=False)
        .metrics
        for flag in (False, True)
    }
    assert reports[True].keys() == reports[False].keys()
    assert reports[False]["recall@1000@0.5"] > 0  # something found, so the comparison bites
    for key, value in reports[False].items():  # the same GT; proposals a level of rounding apart
        assert reports[True][key] == pytest.approx(value, abs=0.05), key


def test_inference_commands_take_the_loaders_workers(tmp_path):
    from rpnkit.cli import build_parser
    from rpnkit.cli.options import load_runtime

    ckpt = _tiny_rpn_checkpoint(tmp_path)
    parser = build_parser()
    for command in ("propose", "detect"):
        args = parser.parse_args([command, "photos", "--checkpoint", str(ckpt), "--workers", "3"])
        assert load_runtime(args).num_workers == 3
    args = parser.parse_args(["eval", "--checkpoint", str(ckpt), "--data", "d"])
    assert args.workers is None and load_runtime(args).num_workers == 0  # the CPU's default


def test_the_prefetcher_passes_what_is_not_a_batch_through_and_warns_each_skip_once():
    from rpnkit.data import SkippedSample, SyntheticShapes, collate
    from rpnkit.data.dataset import Unreadable
    from rpnkit.engine.streaming import DevicePrefetcher

    items = SyntheticShapes(2)
    batch = collate([items[0], Unreadable("a.jpg: cut short"), items[1]])
    with pytest.warns(SkippedSample, match="skipped a.jpg: cut short") as caught:
        out = list(DevicePrefetcher(iter([batch, None, batch]), torch.device("cpu")))
    assert out[1] is None and len(out) == 3
    assert len([w for w in caught if issubclass(w.category, SkippedSample)]) == 1
