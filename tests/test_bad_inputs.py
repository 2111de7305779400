"""A corpus of bad inputs, each run through the command line as a user would meet it.

Every case builds one bad input in tmp_path (beside good raccoon samples where that makes
sense), runs ``rpnkit`` on it and checks the documented outcome (docs/cli.md, "Datasets" and
"Option ranges, errors and warnings"; docs/design.md, "The data path and bad input"):

- ``skip``: exit 0; exactly one ``warning: skipped <file>...: <problem>`` line per bad item;
  the summary counts it; the good samples are still there;
- ``clip``: exit 0; no warning; the summary counts the clipped box;
- ``load``: an unusual but valid input: exit 0, no warning, nothing left out;
- ``stop``: exit 2; exactly one ``rpnkit <cmd>: error: ...`` line (after the warnings of the
  samples read before it, if any) naming the file and the problem.

Never a traceback. Checkpoints are built once per module (one 2-step ``train`` of the tiny
preset, and a tiny Faster R-CNN saved with ``save_model``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from rpnkit.cli import main
from rpnkit.engine.checkpoint import DETECTOR, ModelSpec, save_model
from rpnkit.modeling.presets import build_detector, detector_config, preset_config

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"
GOOD = ("raccoon-4", "raccoon-5", "raccoon-6")  # the good samples beside each bad one (small)
ODD = "raccoon-7"  # the fourth sample, made bad: 410x308, one raccoon at VOC (92, 79, 271, 264)
SIZE = ["--short-side", "96", "--max-size", "144", "--no-progress"]
TINY = ["--preset", "tiny", *SIZE]
TRAIN = ["--steps", "2", "--warmup", "0", "--batch-size", "2", "--workers", "0", *TINY]  # 2 x 2


# ---------------------------------------------------------------- running the command line


@dataclass
class Expect:
    """What a case runs and what must come of it (see the module's docstring)."""

    argv: list[str]
    outcome: str  # "skip", "clip", "load" or "stop"
    # one entry per expected warning line: the fragments that line must hold (the file first)
    warnings: list[tuple[str, ...]] = field(default_factory=list)
    error: tuple[str, ...] = ()  # stop: the fragments of the error line (the file first)
    stdout: tuple[str, ...] = ()  # whole lines stdout must hold (summaries, counts)
    mentions: tuple[str, ...] = ()  # fragments stdout must hold (what was kept)
    check: Callable[[], None] | None = None  # anything else, after the run


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def run_cli(argv: list[str], capsys) -> Ran:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def assert_outcome(expect: Expect, ran: Ran) -> None:
    command = expect.argv[0]
    assert "Traceback" not in ran.err + ran.out, ran.err
    lines = ran.err_lines
    warned = [line for line in lines if line.startswith("warning: ")]
    errors = [line for line in lines if line.startswith(f"rpnkit {command}: error: ")]
    assert len(lines) == len(warned) + len(errors), f"stray stderr lines:\n{ran.err}"
    # one warning line per bad item, each naming its file and its problem
    assert len(warned) == len(expect.warnings), ran.err
    for fragments in expect.warnings:
        matching = [line for line in warned if all(f in line for f in fragments)]
        assert len(matching) == 1, (fragments, ran.err)
        assert matching[0].startswith("warning: skipped "), matching[0]
    if expect.outcome == "stop":
        assert ran.code == 2, (ran.out, ran.err)
        assert len(errors) == 1 and lines[-1] == errors[0], ran.err
        for fragment in expect.error:
            assert fragment in errors[0], (fragment, errors[0])
    else:
        assert ran.code == 0, ran.err
        assert errors == []
        if expect.outcome in ("clip", "load"):
            assert warned == []
    out_lines = ran.out.splitlines()
    for line in expect.stdout:
        assert line in out_lines, (line, ran.out)
    for fragment in expect.mentions:
        assert fragment in ran.out, (fragment, ran.out)
    if expect.check is not None:
        expect.check()


# ---------------------------------------------------------------- datasets with one bad sample


def voc_box(stem: str) -> tuple[int, int, tuple[int, int, int, int]]:
    """(width, height, (xmin, ymin, xmax, ymax)) of a raccoon image, from its VOC XML."""
    root = ET.parse(RACCOON / "annotations" / f"{stem}.xml").getroot()
    size = root.find("size")
    bnd = root.find("object/bndbox")
    box = tuple(int(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    return int(size.findtext("width")), int(size.findtext("height")), box


def copy_image(stem: str, dest: Path) -> None:
    shutil.copy(RACCOON / "images" / f"{stem}.jpg", dest)


def write_odd(path: Path, odd_image: Callable[[Path], None] | None) -> None:
    """raccoon-7 at ``path``, or what ``odd_image`` writes there."""
    if odd_image is None:
        copy_image(ODD, path)
    else:
        odd_image(path)


def obj(xmin="11", ymin="11", xmax="50", ymax="60", name: str | None = "raccoon") -> str:
    """A VOC object; a coordinate given as None is left out."""
    coords = "".join(
        f"<{k}>{v}</{k}>"
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax))
        if v is not None
    )
    name_tag = "" if name is None else f"<name>{name}</name>"
    return f"<object>{name_tag}<bndbox>{coords}</bndbox></object>"


def voc(
    root: Path,
    *,
    extra: str = "",
    odd_image: Callable[[Path], None] | None = None,
    odd_name: str = f"{ODD}.jpg",
    odd_xml: str | None = None,
) -> Path:
    """A VOC folder: the three good samples and raccoon-7, its image written by ``odd_image``
    (as ``odd_name``) and its XML given ``extra`` objects after its raccoon (or ``odd_xml``)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for stem in GOOD:
        copy_image(stem, root / "images")
        shutil.copy(RACCOON / "annotations" / f"{stem}.xml", root / "annotations")
    write_odd(root / "images" / odd_name, odd_image)
    if odd_xml is None:
        odd_xml = (RACCOON / "annotations" / f"{ODD}.xml").read_text()
        odd_xml = odd_xml.replace(f"<filename>{ODD}.jpg<", f"<filename>{odd_name}<")
        odd_xml = odd_xml.replace("</annotation>", extra + "</annotation>")
    (root / "annotations" / f"{ODD}.xml").write_text(odd_xml)
    return root


def coco(
    root: Path,
    *,
    extra: tuple[dict, ...] = (),
    odd_image: Callable[[Path], None] | None = None,
    text: str | None = None,
) -> Path:
    """A COCO folder (annotations/instances_train.json, images/): the three good samples and
    raccoon-7 (written by ``odd_image``), whose annotations ``extra`` follow the four good ones
    (``annotations[4]`` on, ids 5 on, on image 4 unless they say otherwise); or the JSON
    ``text`` as given."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    images, annotations = [], []
    for i, stem in enumerate((*GOOD, ODD), start=1):
        if stem == ODD:
            write_odd(root / "images" / f"{stem}.jpg", odd_image)
        else:
            copy_image(stem, root / "images")
        width, height, (x1, y1, x2, y2) = voc_box(stem)
        images.append({"id": i, "file_name": f"{stem}.jpg", "width": width, "height": height})
        bbox = [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": bbox, "iscrowd": 0})
    for k, ann in enumerate(extra, start=len(annotations) + 1):
        annotations.append({"id": k, "image_id": 4, "category_id": 1, **ann})
    data = {"images": images, "annotations": annotations}
    data["categories"] = [{"id": 1, "name": "raccoon"}]
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps(data) if text is None else text)
    return root


def yolo(
    root: Path,
    *,
    extra: tuple[str, ...] = (),
    odd_image: Callable[[Path], None] | None = None,
    yaml_text: str = "path: .\ntrain: images/train\nnames: [raccoon]\n",
) -> Path:
    """A YOLO folder (data.yaml, images/train, labels/train): the three good samples and
    raccoon-7 (written by ``odd_image``), whose label file gets the lines ``extra`` after its
    raccoon (line 2 on)."""
    images, labels = root / "images" / "train", root / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for stem in (*GOOD, ODD):
        if stem == ODD:
            write_odd(images / f"{stem}.jpg", odd_image)
        else:
            copy_image(stem, images)
        w, h, (x1, y1, x2, y2) = voc_box(stem)
        x1 -= 1
        y1 -= 1
        line = f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
        lines = [line, *extra] if stem == ODD else [line]
        (labels / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml_text)
    return root


# the sources as their summary lines name them
def voc_source(root: Path) -> str:
    return str(root / "annotations")


def coco_source(root: Path) -> str:
    return str(root / "annotations" / "instances_train.json")


def yolo_source(root: Path) -> str:
    return f"{root / 'data.yaml'} [train]"


# ---------------------------------------------------------------- bad images


def truncated(path: Path) -> None:
    data = (RACCOON / "images" / f"{ODD}.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def text_file(path: Path) -> None:
    path.write_text("this is not a JPEG, only named like one\n")


def raccoon(mode: str | None = None) -> Image.Image:
    image = Image.open(RACCOON / "images" / f"{ODD}.jpg")
    return image.convert(mode) if mode else image


def cmyk(path: Path) -> None:
    raccoon("CMYK").save(path, "JPEG")
    assert Image.open(path).mode == "CMYK"


def png16(path: Path) -> None:
    gray = np.asarray(raccoon("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(path)  # mode I;16
    assert Image.open(path).mode in ("I;16", "I")


def palette_transparent(path: Path) -> None:
    raccoon().convert("P", palette=Image.Palette.ADAPTIVE).save(path, transparency=0)
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info


def rgba(path: Path) -> None:
    image = raccoon("RGBA")
    image.putalpha(128)
    image.save(path)


def exif_rotated(path: Path) -> None:
    """raccoon-7 stored on its side (308x410) with EXIF orientation 6: displayed upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # exif_transpose turns it by 270 degrees: the stored image is turned by 90
    raccoon().transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes())


def huge(path: Path) -> None:
    Image.new("RGB", (1000, 1000), (90, 120, 60)).save(path)  # 1,000,000 pixels


LIMIT = 200_000  # Pillow's lowered limit: refuses over 400,000; the good images are below it


def lower_pixel_limit(ctx: Ctx) -> None:
    ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT)  # restored after the test


def images_truncated(ctx: Ctx) -> Expect:
    root = voc(ctx.tmp / "voc", odd_image=truncated)
    image = root / "images" / f"{ODD}.jpg"
    return Expect(
        ["train", "--data", root, *TRAIN, "--out", ctx.tmp / "run"],
        "skip",
        warnings=[(f"skipped {image}: unreadable or truncated image (", "truncated")],
        stdout=(
            f"{voc_source(root)}: 4 images, 1 class",  # its header is fine
            "1 image(s) could not be read and were left out",
        ),
        check=lambda: trained(ctx.tmp / "run", steps=2),
    )


def images_zero_bytes(ctx: Ctx) -> Expect:
    root = yolo(ctx.tmp / "yolo", odd_image=zero_bytes)
    image = root / "images" / "train" / f"{ODD}.jpg"
    return Expect(
        ["anchors", "--data", root, *TINY],
        "skip",
        warnings=[(f"skipped {image}: unreadable image (cannot identify image file",)],
        stdout=(f"{yolo_source(root)}: 3 images, 1 class, 1 image(s) skipped",),
        mentions=(gt_boxes(3),),
    )


def images_text_as_jpeg(ctx: Ctx) -> Expect:
    root = coco(ctx.tmp / "coco", odd_image=text_file)
    image = root / "images" / f"{ODD}.jpg"
    return Expect(
        ["anchors", "--data", root, *TINY],
        "skip",
        warnings=[(f"skipped {image}: unreadable image (cannot identify image file",)],
        stdout=(f"{coco_source(root)}: 3 images, 1 class, 1 image(s) skipped",),
        mentions=(gt_boxes(3),),
    )


def loads_in_training(odd_image, odd_name: str, extra: str = ""):
    """An unusual but valid image: a 2-step train decodes all four, none left out."""

    def build(ctx: Ctx) -> Expect:
        root = voc(ctx.tmp / "voc", odd_image=odd_image, odd_name=odd_name, extra=extra)
        return Expect(
            ["train", "--data", root, *TRAIN, "--out", ctx.tmp / "run"],
            "load",
            stdout=(f"{voc_source(root)}: 4 images, 1 class",),  # nothing clipped either
            check=lambda: trained(ctx.tmp / "run", steps=2),
        )

    return build


def trained(run: Path, *, steps: int) -> None:
    from rpnkit.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.safetensors")["step"] == steps


def images_huge(ctx: Ctx) -> Expect:
    lower_pixel_limit(ctx)
    root = voc(ctx.tmp / "voc", odd_image=huge)
    xml, image = root / "annotations" / f"{ODD}.xml", root / "images" / f"{ODD}.jpg"
    return Expect(
        ["anchors", "--data", root, *TINY],
        "skip",
        warnings=[
            (
                f"skipped {xml}: {image}: image of 1,000,000 pixels is over Pillow's limit of "
                "400,000 pixels",
                "--max-image-pixels 0",
            )
        ],
        stdout=(f"{voc_source(root)}: 3 images, 1 class, 1 image(s) skipped",),
        mentions=(gt_boxes(3),),
    )


def images_huge_allowed(ctx: Ctx) -> Expect:
    lower_pixel_limit(ctx)
    root = voc(ctx.tmp / "voc", odd_image=huge)
    xml = root / "annotations" / f"{ODD}.xml"  # the size of the image it now names
    xml.write_text(re.sub(r"<size>.*</size>", "<size><width>1000</width><height>1000</height>"
                          "<depth>3</depth></size>", xml.read_text(), flags=re.S))  # fmt: skip
    run = ctx.tmp / "run"
    argv = ["train", "--data", root, *TRAIN, "--out", run, "--max-image-pixels", "0"]

    def check() -> None:
        trained(run, steps=2)
        assert Image.MAX_IMAGE_PIXELS == LIMIT  # the command's setting lasted as long as it

    return Expect(argv, "load", stdout=(f"{voc_source(root)}: 4 images, 1 class",), check=check)


# ---------------------------------------------------------------- bad boxes, three formats

W, H = 410, 308  # raccoon-7
# (COCO bbox, VOC (xmin, ymin, xmax, ymax), YOLO line, each format's box as its warning names
# it (COCO's as the JSON gives it), problem or clip note): the same fault
BOXES = {
    "nan": (
        [float("nan"), 10, 50, 50],
        ("nan", "11", "50", "60"),
        "0 nan 0.5 0.5 0.5",
        (
            "bbox [NaN, 10, 50, 50] (x, y, w, h)",
            "box (nan, 10.0, 50.0, 60.0)",
            "box (nan, 77.0, nan, 231.0)",
        ),
        "has a NaN or infinite coordinate",
    ),
    "inf": (
        [10, 10, float("inf"), 50],
        ("11", "11", "inf", "60"),
        "0 0.5 0.5 inf 0.5",
        (
            "bbox [10, 10, Infinity, 50] (x, y, w, h)",
            "box (10.0, 10.0, inf, 60.0)",
            "box (-inf, 77.0, inf, 231.0)",
        ),
        "has a NaN or infinite coordinate",
    ),
    "inverted": (
        [60, 10, -50, 50],
        ("61", "11", "10", "60"),
        "0 0.5 0.5 -0.5 0.5",
        (
            "bbox [60, 10, -50, 50] (x, y, w, h)",
            "box (60.0, 10.0, 10.0, 60.0)",
            "box (307.5, 77.0, 102.5, 231.0)",
        ),
        "is empty or inverted",
    ),
    "zero-width": (
        [10, 10, 0, 50],
        ("11", "11", "10", "60"),
        "0 0.5 0.5 0 0.5",
        (
            "bbox [10, 10, 0, 50] (x, y, w, h)",
            "box (10.0, 10.0, 10.0, 60.0)",
            "box (205.0, 77.0, 205.0, 231.0)",
        ),
        "is empty or inverted",
    ),
    "outside": (
        [500, 10, 50, 50],
        ("501", "11", "550", "60"),
        "0 1.5 0.5 0.5 0.5",
        (
            "bbox [500, 10, 50, 50] (x, y, w, h)",
            "box (500.0, 10.0, 550.0, 60.0)",
            "box (512.5, 77.0, 717.5, 231.0)",
        ),
        f"is out of bounds of the {W}x{H} image (wholly outside)",
    ),
    "partly-outside": (
        [380, 10, 100, 50],
        ("381", "11", "480", "60"),
        "0 1.0 0.5 0.5 0.5",
        (
            "box (380.0, 10.0, 480.0, 60.0)",
            "box (380.0, 10.0, 480.0, 60.0)",
            "box (307.5, 77.0, 512.5, 231.0)",
        ),
        None,  # clipped and counted
    ),
}


def box_case(fmt: str, fault: str):
    """raccoon-7 gets a second, bad box; its raccoon and the other images stay."""
    coco_bbox, voc_coords, yolo_line, shown, problem = BOXES[fault]
    k = ("coco", "voc", "yolo").index(fmt)

    def build(ctx: Ctx) -> Expect:
        root, where, source = bad_annotation(
            ctx, fmt, {"bbox": coco_bbox}, obj(*voc_coords), yolo_line
        )
        argv = ["anchors", "--data", root, *TINY]
        summary = f"{source}: 4 images, 1 class"
        if problem is None:  # overshoots by more than the tolerance: clipped, counted, no warning
            clipped = (f"{summary}, 1 box(es) clipped",)
            return Expect(argv, "clip", stdout=clipped, mentions=(gt_boxes(5),))
        return Expect(
            argv,
            "skip",
            warnings=[(f"skipped {where}{shown[k]} {problem}",)],
            stdout=(f"{summary}, 1 annotation(s) skipped",),
            mentions=(gt_boxes(4),),  # raccoon-7 keeps its raccoon
        )

    return build


def gt_boxes(n: int) -> str:
    """What ``rpnkit anchors`` says of the GT boxes it kept."""
    return f"best-anchor IoU of {n} GT boxes at training scale"


def bad_annotation(ctx: Ctx, fmt: str, coco_ann: dict, voc_obj: str, yolo_line: str):
    """The dataset with raccoon-7's bad annotation, the start of its warning (the file, the
    entry) and its summary's source."""
    if fmt == "coco":
        root = coco(ctx.tmp / "coco", extra=(coco_ann,))
        json_path = coco_source(root)
        return root, f"{json_path}: annotations[4] (id 5, image {ODD}.jpg): ", json_path
    if fmt == "voc":
        root = voc(ctx.tmp / "voc", extra=voc_obj)
        return root, f"{root / 'annotations' / ODD}.xml: object 1 (raccoon): ", voc_source(root)
    root = yolo(ctx.tmp / "yolo", extra=(yolo_line,))
    return root, f"{root / 'labels' / 'train' / ODD}.txt line 2: ", yolo_source(root)


def annotation_case(fmt: str, coco_ann=None, voc_obj="", yolo_line="", *, problem: str):
    """One bad annotation (not a box fault) on raccoon-7, skipped alone."""

    def build(ctx: Ctx) -> Expect:
        root, where, source = bad_annotation(ctx, fmt, coco_ann or {}, voc_obj, yolo_line)
        if fmt == "voc":  # the problem says which object
            where = where.removesuffix("object 1 (raccoon): ")
        return Expect(
            ["anchors", "--data", root, *TINY],
            "skip",
            warnings=[(f"skipped {where}{problem}",)],
            stdout=(f"{source}: 4 images, 1 class, 1 annotation(s) skipped",),
            mentions=(gt_boxes(4),),  # raccoon-7 keeps its raccoon
        )

    return build


# ---------------------------------------------------------------- classes


def val_split_lacking_a_class(ctx: Ctx) -> Expect:
    """Training data with 'dog' and 'raccoon', validation data with raccoons only: trained and
    evaluated with the training set's ids (read alone, the split would make raccoon class 1)."""
    train_root = voc(ctx.tmp / "train", extra=obj("301", "11", "400", "60", name="dog"))
    val_root = ctx.tmp / "val"
    (val_root / "images").mkdir(parents=True)
    (val_root / "annotations").mkdir()
    for stem in ("raccoon-8", "raccoon-9"):
        copy_image(stem, val_root / "images")
        shutil.copy(RACCOON / "annotations" / f"{stem}.xml", val_root / "annotations")
    run = ctx.tmp / "run"

    def check() -> None:
        record = yaml.safe_load((run / "config.yaml").read_text())
        assert record["model"]["class_names"] == ["dog", "raccoon"]
        assert (run / "metrics.json").is_file()  # evaluated on the validation split

    argv = ["train", "--data", train_root, "--val-data", val_root, *TRAIN, "--out", run]
    return Expect(
        argv,
        "load",
        stdout=(
            f"{voc_source(train_root)}: 4 images, 2 classes",
            f"{voc_source(val_root)}: 2 images, 2 classes",  # the training set's two
        ),
        check=check,
    )


def val_object_of_an_unknown_class(ctx: Ctx) -> Expect:
    """The detector knows 'raccoon' only; a 'dog' in the evaluation set is left out by name."""
    root = voc(ctx.tmp / "voc", extra=obj("301", "11", "400", "60", name="dog"))
    xml = root / "annotations" / f"{ODD}.xml"
    return Expect(
        ["eval", "--checkpoint", ctx.ckpt.detector, "--data", root, *SIZE],
        "skip",
        warnings=[
            (
                f"skipped {voc_source(root)}: 1 object(s) of classes not among the 1 given, left "
                f"out ('dog' 1); the first: {xml} object 1: unknown class 'dog' (known: 'raccoon')",
            )
        ],
        stdout=(f"{voc_source(root)}: 4 images, 1 class, 1 annotation(s) skipped",),
    )


# ---------------------------------------------------------------- annotation files


def stop_on_coco_text(text: str, problem: str):
    def build(ctx: Ctx) -> Expect:
        root = coco(ctx.tmp / "coco", text=text)
        return Expect(
            ["anchors", "--data", root, *TINY],
            "stop",
            error=(f"rpnkit anchors: error: {coco_source(root)}: {problem}",),
        )

    return build


def malformed_xml(ctx: Ctx) -> Expect:
    root = voc(ctx.tmp / "voc", odd_xml=f"<annotation><filename>{ODD}.jpg</filename><object>")
    xml = root / "annotations" / f"{ODD}.xml"
    return Expect(
        ["anchors", "--data", root, *TINY],
        "skip",
        warnings=[(f"skipped {xml}: malformed XML (no element found: line 1",)],
        stdout=(f"{voc_source(root)}: 3 images, 1 class, 1 image(s) skipped",),
        mentions=(gt_boxes(3),),
    )


def yaml_without_names(ctx: Ctx) -> Expect:
    root = yolo(ctx.tmp / "yolo", yaml_text="path: .\ntrain: images/train\n")
    return Expect(
        ["anchors", "--data", root, *TINY],
        "stop",
        error=(f"rpnkit anchors: error: {root / 'data.yaml'}: needs 'train' and 'names' entries",),
    )


def unknown_image_ids(ctx: Ctx) -> Expect:
    """Two annotations of images the JSON does not hold: counted in one line."""
    bbox = [10, 10, 50, 50]
    extra = ({"image_id": 999, "bbox": bbox}, {"image_id": 1000, "bbox": bbox})
    root = coco(ctx.tmp / "coco", extra=extra)
    json_path = coco_source(root)
    return Expect(
        ["anchors", "--data", root, *TINY],
        "skip",
        warnings=[
            (f"skipped {json_path}: 2 annotation(s) refer to unknown image ids (first: 999)",)
        ],
        stdout=(f"{json_path}: 4 images, 1 class, 2 annotation(s) skipped",),
        mentions=(gt_boxes(4),),
    )


# ---------------------------------------------------------------- checkpoints


@dataclass
class Checkpoints:
    rpn: Path  # a 2-step train run of the tiny preset (step 2 of 2)
    detector: Path  # a tiny Faster R-CNN for 'raccoon', untrained
    image: Path  # a good image to run them on
    data: Path  # the VOC folder the RPN was trained on


class Payload:
    """Unpickled, this would create ``marker``: proof that a loader executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_payload(ctx: Ctx) -> Expect:
    path, marker = ctx.tmp / "model.pt", ctx.tmp / "EXECUTED"
    torch.save({"x": 1, "payload": Payload(marker)}, path)

    def check() -> None:
        assert not marker.exists(), "the pickle was unpickled"
        torch.load(path, weights_only=False)  # the payload is live: unpickled, it runs
        assert marker.exists()

    return Expect(
        ["propose", ctx.ckpt.image, "--checkpoint", path, "--out", ctx.tmp / "p.json", *SIZE],
        "stop",
        error=(f"{path}: not a readable rpnkit checkpoint (",),
        check=check,
    )


def random_bytes(ctx: Ctx) -> Expect:
    path = ctx.tmp / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return Expect(
        ["detect", ctx.ckpt.image, "--checkpoint", path, "--out", ctx.tmp / "d.json", *SIZE],
        "stop",
        error=(f"{path}: not a readable rpnkit checkpoint (",),
    )


def truncated_safetensors(ctx: Ctx) -> Expect:
    path = ctx.tmp / "cut.safetensors"
    data = ctx.ckpt.rpn.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Expect(
        ["eval", "--checkpoint", path, "--data", ctx.ckpt.data, *SIZE],
        "stop",
        error=(f"{path}: not a readable rpnkit checkpoint (",),
    )


def header_without(key: str, command: str):
    """A checkpoint whose header lacks ``key`` (once a KeyError traceback), given to
    ``command``."""

    def build(ctx: Ctx) -> Expect:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        path = ctx.tmp / "headless.safetensors"
        with safe_open(str(ctx.ckpt.rpn), framework="pt") as f:
            metadata = f.metadata()
        header = json.loads(metadata["rpnkit"])
        del header[key]
        save_file(load_file(str(ctx.ckpt.rpn)), str(path), {"rpnkit": json.dumps(header)})
        argv = {
            "propose": [
                "propose",
                ctx.ckpt.image,
                "--checkpoint",
                path,
                "--out",
                ctx.tmp / "p.json",
            ],
            "train": ["train", "--resume", path, "--steps", "9"],
        }[command]
        return Expect(
            [*argv, *SIZE],
            "stop",
            error=(f"{path}: not a readable rpnkit checkpoint (its header lacks {key})",),
        )

    return build


def header_config(change: Callable[[dict], None], command: str, error: str):
    """The detector checkpoint with its header's config changed by ``change``, given to
    ``command``: one line naming the file (once a line without it)."""

    def build(ctx: Ctx) -> Expect:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        path = ctx.tmp / "changed.safetensors"
        with safe_open(str(ctx.ckpt.detector), framework="pt") as f:
            header = json.loads(f.metadata()["rpnkit"])
        change(header["config"])
        save_file(load_file(str(ctx.ckpt.detector)), str(path), {"rpnkit": json.dumps(header)})
        argv = {
            "detect": ["detect", ctx.ckpt.image, "--out", ctx.tmp / "d.json"],
            "export": ["export", "--out", ctx.tmp / "m.onnx"],
        }[command]
        return Expect([*argv, "--checkpoint", path], "stop", error=(f"{path}: {error}",))

    return build


def _backbone_named(config: dict, name: str) -> None:
    config["detector"]["model"]["backbone"]["name"] = name


def nan_weights(ctx: Ctx) -> Expect:
    model, spec = tiny_detector()
    with torch.no_grad():
        model.roi_heads.box_head.fc6.weight[0, 0] = float("nan")
    path = save_model(ctx.tmp / "diverged.safetensors", model, spec)
    return Expect(
        ["detect", ctx.ckpt.image, "--checkpoint", path, "--out", ctx.tmp / "d.json", *SIZE],
        "stop",
        error=(f"{path}: weight roi_heads.box_head.fc6.weight holds NaN or infinite values",),
    )


def rpn_given_to_detect(ctx: Ctx) -> Expect:
    out = ctx.tmp / "d.json"
    return Expect(
        ["detect", ctx.ckpt.image, "--checkpoint", ctx.ckpt.rpn, "--out", out, *SIZE],
        "stop",
        error=(str(ctx.ckpt.rpn), "not a Faster R-CNN checkpoint"),
        check=lambda: not_written(out),
    )


def not_written(path: Path) -> None:
    assert not path.exists()


def another_model_resumed(ctx: Ctx) -> Expect:
    run = ctx.tmp / "run"
    argv = ["train", "--data", ctx.ckpt.data, "--out", run, "--resume", ctx.ckpt.rpn]
    return Expect(
        [*argv, "--model", "faster-rcnn", "--steps", "4", *SIZE],
        "stop",
        error=(
            f"{ctx.ckpt.rpn}: an rpn checkpoint resumes as one (--model rpn, kind='rpn'), not "
            "as 'faster-rcnn'",
        ),
        check=lambda: not_written(run / "checkpoint.safetensors"),
    )


def weights_only_resumed(ctx: Ctx) -> Expect:
    run = ctx.tmp / "run"
    argv = ["train", "--data", ctx.ckpt.data, *TRAIN, "--out", run, "--resume", ctx.ckpt.detector]
    return Expect(
        argv,
        "stop",
        error=(f"{ctx.ckpt.detector}: a model to use (no optimizer or schedule state), not a ",),
        check=lambda: not_written(run / "checkpoint.safetensors"),
    )


def another_runs_checkpoint_resumed_in_a_run_folder(ctx: Ctx) -> Expect:
    # once: the run in A overwritten by B's, its config.yaml B's, its log the two mixed
    a = ctx.tmp / "A"
    shutil.copytree(ctx.ckpt.rpn.parent, a)
    b = ctx.tmp / "B"
    assert main(["train", "--data", str(ctx.ckpt.data), *map(str, TRAIN), "--seed", "1",
                 "--out", str(b)]) == 0  # fmt: skip
    foreign = a / "b.safetensors"
    shutil.copy(b / "checkpoint.safetensors", foreign)
    before = hashlib.md5((a / "checkpoint.safetensors").read_bytes()).hexdigest()

    def unchanged():
        assert hashlib.md5((a / "checkpoint.safetensors").read_bytes()).hexdigest() == before

    return Expect(
        ["train", "--resume", foreign, "--steps", "4", "--no-progress"],
        "stop",
        error=(f"{foreign}: its folder holds another run ({a / 'checkpoint.safetensors'} has",),
        check=unchanged,
    )


def folder_as_checkpoint(ctx: Ctx) -> Expect:
    folder = ctx.ckpt.rpn.parent
    return Expect(
        ["eval", "--checkpoint", folder, "--data", ctx.ckpt.data, *SIZE],
        "stop",
        error=(
            f"{folder}: is a folder, not a checkpoint file (did you mean "
            f"{folder / 'checkpoint.safetensors'}?)",
        ),
    )


def missing_checkpoint(ctx: Ctx) -> Expect:
    path = ctx.tmp / "nowhere.safetensors"
    return Expect(
        ["propose", ctx.ckpt.image, "--checkpoint", path, "--out", ctx.tmp / "p.json", *SIZE],
        "stop",
        error=(f"rpnkit propose: error: {path}: checkpoint not found",),
    )


# ---------------------------------------------------------------- command-line values


def bad_value(command: str, option: str, value: str, rule: str):
    def build(ctx: Ctx) -> Expect:
        before = {
            "train": ["--data", ctx.ckpt.data, "--out", ctx.tmp / "run"],
            "propose": [ctx.ckpt.image, "--checkpoint", ctx.ckpt.rpn],
            "detect": [ctx.ckpt.image, "--checkpoint", ctx.ckpt.detector],
            "anchors": ["--data", ctx.ckpt.data],
        }[command]
        line = f"rpnkit {command}: error: argument {option}: {rule}"
        return Expect(
            [command, *before, option, value],
            "stop",
            error=(line,),
            check=lambda: not_written(ctx.tmp / "run"),
        )

    return build


# ---------------------------------------------------------------- runs


def resume_finished_run(ctx: Ctx) -> Expect:
    run = ctx.tmp / "run"
    run.mkdir()
    checkpoint = run / "checkpoint.safetensors"
    shutil.copy(ctx.ckpt.rpn, checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()

    def check() -> None:  # the finished run is left as it was
        assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest

    return Expect(
        ["train", "--data", ctx.ckpt.data, *TRAIN, "--out", run, "--resume", checkpoint],
        "stop",
        error=(
            f"{checkpoint}: the checkpoint is at step 2 and the run has 2 steps: nothing is "
            "left to train (give more --steps, TrainConfig.steps)",
        ),
        check=check,
    )


def only_unreadable_images(ctx: Ctx) -> Expect:
    root = voc(ctx.tmp / "voc", odd_image=truncated)
    for stem in GOOD:
        data = (root / "images" / f"{stem}.jpg").read_bytes()
        (root / "images" / f"{stem}.jpg").write_bytes(data[: len(data) // 2])
    run = ctx.tmp / "run"
    paths = [root / "images" / f"{stem}.jpg" for stem in (*GOOD, ODD)]
    return Expect(
        ["train", "--data", root, *TRAIN, "--out", run],
        "stop",
        warnings=[(f"skipped {p}: unreadable or truncated image",) for p in paths],
        error=(
            "rpnkit train: error: no training image could be read: 4 skipped in a row (first: ",
            "unreadable or truncated image",
            str(root / "images"),
        ),
        check=lambda: not_written(run / "checkpoint.safetensors"),
    )


def propose_folder_with_a_non_image(ctx: Ctx) -> Expect:
    folder = ctx.tmp / "photos"
    folder.mkdir()
    for stem in GOOD:
        copy_image(stem, folder)
    (folder / "notes.txt").write_text("not a photo\n")
    out = ctx.tmp / "proposals.json"

    def check() -> None:
        names = {r["file_name"] for r in json.loads(out.read_text())}
        assert names == {f"{stem}.jpg" for stem in GOOD}

    return Expect(
        ["propose", folder, "--checkpoint", ctx.ckpt.rpn, "--out", out, "--top", "5", *SIZE],
        "skip",
        warnings=[(f"skipped {folder / 'notes.txt'}: not an image (.jpg, ",)],
        mentions=(f"wrote 15 proposals for 3 image(s) to {out} (first results after ",),
        check=check,
    )


def propose_folder_with_entries_named_as_images(ctx: Ctx) -> Expect:
    # a folder and a link to nothing named .jpg were passed over without a word
    folder = ctx.tmp / "photos"
    folder.mkdir()
    for stem in GOOD:
        copy_image(stem, folder)
    (folder / "album.jpg").mkdir()
    (folder / "gone.jpg").symlink_to(ctx.tmp / "nowhere.jpg")
    out = ctx.tmp / "proposals.json"
    return Expect(
        ["propose", folder, "--checkpoint", ctx.ckpt.rpn, "--out", out, "--top", "5", *SIZE],
        "skip",
        warnings=[
            (f"skipped {folder / 'album.jpg'}: a folder, not an image file",),
            (f"skipped {folder / 'gone.jpg'}: a link to nothing, not an image file",),
        ],
        mentions=(f"wrote 15 proposals for 3 image(s) to {out} (first results after ",),
    )


def propose_one_truncated_image(ctx: Ctx) -> Expect:
    image = ctx.tmp / "cut.jpg"
    truncated(image)
    out = ctx.tmp / "p.json"
    return Expect(
        ["propose", image, "--checkpoint", ctx.ckpt.rpn, "--out", out, *SIZE],
        "stop",
        warnings=[(f"skipped {image}: unreadable or truncated image",)],
        error=("rpnkit propose: error: ", str(image), "truncated"),
        check=lambda: not_written(out),
    )


def eval_skips_a_nan_box(ctx: Ctx) -> Expect:
    root = voc(ctx.tmp / "voc", extra=obj("nan", "11", "50", "60"))
    xml = root / "annotations" / f"{ODD}.xml"
    return Expect(
        ["eval", "--checkpoint", ctx.ckpt.rpn, "--data", root, *SIZE],
        "skip",
        warnings=[(f"skipped {xml}: object 1 (raccoon): box (nan, 10.0, 50.0, 60.0) has a NaN",)],
        stdout=(f"{voc_source(root)}: 4 images, 1 class, 1 annotation(s) skipped",),
    )


# ---------------------------------------------------------------- the corpus


@dataclass
class Ctx:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    ckpt: Checkpoints


def case(name: str, build: Callable[[Ctx], Expect]):
    return pytest.param(build, id=name)


CASES = [
    # images
    case("image-truncated-jpeg-train", images_truncated),
    case("image-zero-bytes-yolo", images_zero_bytes),
    case("image-text-named-jpg-coco", images_text_as_jpeg),
    case("image-cmyk-jpeg", loads_in_training(cmyk, f"{ODD}.jpg")),
    case("image-16-bit-png", loads_in_training(png16, f"{ODD}.png")),
    case("image-palette-png-transparency", loads_in_training(palette_transparent, f"{ODD}.png")),
    case("image-rgba-png", loads_in_training(rgba, f"{ODD}.png")),
    # a box at x 300-400 fits the 410-wide displayed image; unrotated (308 wide) it would not
    case(
        "image-exif-rotated",
        loads_in_training(exif_rotated, f"{ODD}.jpg", obj("301", "11", "400", "60")),
    ),
    case("image-over-pixel-limit", images_huge),
    case("image-over-pixel-limit-allowed", images_huge_allowed),
    # boxes: six faults in three formats, and non-numeric and missing values
    *[
        case(f"box-{fault}-{fmt}", box_case(fmt, fault))
        for fault in BOXES
        for fmt in ("coco", "voc", "yolo")
    ],
    case(
        "box-non-numeric-coco",
        annotation_case(
            "coco",
            {"bbox": [10, "ten", 50, 50]},
            problem='bbox [10, "ten", 50, 50] has a non-numeric value',
        ),
    ),
    case(
        "box-non-numeric-voc",
        annotation_case(
            "voc",
            voc_obj=obj(ymin="ten"),
            problem="object 1 (raccoon): missing or non-numeric bndbox (<ymin> 'ten')",
        ),
    ),
    case(
        "box-non-numeric-yolo",
        annotation_case(
            "yolo",
            yolo_line="0 0.5 half 0.5 0.5",
            problem="expected 'class cx cy w h', got a non-numeric value: '0 0.5 half 0.5 0.5'",
        ),
    ),
    case("box-missing-coco", annotation_case("coco", {"bbox": None}, problem="bbox is null")),
    case(
        "box-missing-field-coco",
        annotation_case("coco", {"area": 10.0, "segmentation": []}, problem="no 'bbox'"),
    ),
    case(
        "box-missing-field-voc",
        annotation_case(
            "voc",
            voc_obj=obj(ymax=None),
            problem="object 1 (raccoon): missing or non-numeric bndbox (no <ymax>)",
        ),
    ),
    case(
        "box-missing-field-yolo",
        annotation_case(
            "yolo",
            yolo_line="0 0.5 0.5 0.5",
            problem="expected 'class cx cy w h', got 4 fields: '0 0.5 0.5 0.5'",
        ),
    ),
    # classes
    case(
        "class-unknown-category-coco",
        annotation_case(
            "coco", {"category_id": 99, "bbox": [10, 10, 50, 50]}, problem="unknown category 99"
        ),
    ),
    case(
        "class-id-out-of-range-yolo",
        annotation_case(
            "yolo",
            yolo_line="3 0.5 0.5 0.5 0.5",
            problem="unknown class 3 (data.yaml names 1: 0)",
        ),
    ),
    case(
        "class-object-without-name-voc",
        annotation_case("voc", voc_obj=obj(name=None), problem="object 1: no <name>"),
    ),
    case("class-val-split-lacking-a-class", val_split_lacking_a_class),
    case("class-unknown-to-the-checkpoint-eval", val_object_of_an_unknown_class),
    # annotation files
    case(
        "file-malformed-json",
        stop_on_coco_text('{"images": [', "malformed JSON at line 1: Expecting value"),
    ),
    case(
        "file-json-is-a-list",
        stop_on_coco_text("[1, 2]", "not COCO instances JSON (a list, no object)"),
    ),
    case("file-malformed-xml", malformed_xml),
    case(
        "file-yolo-line-with-six-fields",
        annotation_case(
            "yolo",
            yolo_line="0 0.5 0.5 0.5 0.5 0.9",
            problem="expected 'class cx cy w h', got 6 fields: '0 0.5 0.5 0.5 0.5 0.9'",
        ),
    ),
    case("file-data-yaml-without-names", yaml_without_names),
    case("file-annotations-of-unknown-image-ids", unknown_image_ids),
    # checkpoints
    case("checkpoint-torch-pickle-with-payload", pickled_payload),
    case("checkpoint-random-bytes", random_bytes),
    case("checkpoint-truncated-safetensors", truncated_safetensors),
    case("checkpoint-nan-weights", nan_weights),
    case(
        "checkpoint-naming-more-classes-than-its-head",
        header_config(
            lambda c: c.update(class_names=["a", "b", "c"]),
            "detect",
            "names 3 class(es) and its box head has 1",
        ),
    ),
    case(
        "checkpoint-of-an-unknown-backbone",
        header_config(
            lambda c: _backbone_named(c, "nonexistent"),
            "export",
            "its model config builds no model: unknown backbone",
        ),
    ),
    case("checkpoint-header-without-config", header_without("config", "propose")),
    case("checkpoint-header-without-step-resumed", header_without("step", "train")),
    case("checkpoint-header-without-config-resumed", header_without("config", "train")),
    case("checkpoint-rpn-given-to-detect", rpn_given_to_detect),
    case("checkpoint-another-model-resumed", another_model_resumed),
    case("checkpoint-weights-only-resumed", weights_only_resumed),
    case("checkpoint-a-folder", folder_as_checkpoint),
    case(
        "checkpoint-of-another-run-resumed-in-a-run-folder",
        another_runs_checkpoint_resumed_in_a_run_folder,
    ),
    case("checkpoint-missing", missing_checkpoint),
    # command-line values
    case("value-steps", bad_value("train", "--steps", "-5", "must be an integer >= 1, got -5")),
    case(
        "value-batch-size",
        bad_value("train", "--batch-size", "0", "must be an integer >= 1, got 0"),
    ),
    case("value-top", bad_value("propose", "--top", "-1", "must be an integer >= 1, got -1")),
    case(
        "value-log-every",
        bad_value("train", "--log-every", "0", "must be an integer >= 1, got 0"),
    ),
    case(
        "value-short-side",
        bad_value("train", "--short-side", "0", "must be an integer >= 1, got 0"),
    ),
    case(
        "value-grad-clip", bad_value("train", "--grad-clip", "-1", "must be a number > 0, got -1")
    ),
    case(
        "value-score",
        bad_value("detect", "--score", "2", "must be a probability in [0, 1], got 2"),
    ),
    case(
        "value-format", bad_value("anchors", "--format", "tfrecord", "invalid choice: 'tfrecord'")
    ),
    case(  # once read as any integer: a negative seed stopped in numpy or in the library
        "value-seed",
        bad_value("train", "--seed", "-1", "must be an integer in [0, 2**32 - 1], got -1"),
    ),
    # runs
    case("run-resume-a-finished-run", resume_finished_run),
    case("run-only-unreadable-images", only_unreadable_images),
    case("run-propose-folder-with-a-non-image", propose_folder_with_a_non_image),
    case(
        "run-propose-folder-with-entries-named-as-images",
        propose_folder_with_entries_named_as_images,
    ),
    case("run-propose-one-truncated-image", propose_one_truncated_image),
    case("run-eval-skips-a-nan-box", eval_skips_a_nan_box),
]


def tiny_detector():
    torch.manual_seed(0)
    config = detector_config(preset_config("tiny"), 1)
    return build_detector(config), ModelSpec(DETECTOR, config, ("raccoon",))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Checkpoints:
    root = tmp_path_factory.mktemp("checkpoints")
    data = voc(root / "data")
    run = root / "run"
    assert main(["train", "--data", str(data), *TRAIN, "--out", str(run)]) == 0
    model, spec = tiny_detector()
    detector = save_model(root / "detector.safetensors", model, spec)
    image = root / "photo.jpg"
    copy_image(GOOD[0], image)
    return Checkpoints(run / "checkpoint.safetensors", detector, image, data)


@pytest.mark.parametrize("build", CASES)
def test_bad_input(build, tmp_path, monkeypatch, checkpoints, capsys):
    expect = build(Ctx(tmp_path, monkeypatch, checkpoints))
    assert expect.outcome in ("skip", "clip", "load", "stop")
    assert_outcome(expect, run_cli(expect.argv, capsys))


# ---------------------------------------------------------------- focused tests


# the cases that read a dataset with ``anchors`` and skip (or clip) a sample
STRICT = [
    p
    for p in CASES
    if p.id.startswith(("box-", "class-unknown-category", "class-id", "class-object", "file-"))
    or p.id in ("image-zero-bytes-yolo", "image-text-named-jpg-coco", "image-over-pixel-limit")
]


@pytest.mark.parametrize("build", STRICT)
def test_strict_stops_at_the_sample_a_warning_would_name(
    build, tmp_path, monkeypatch, checkpoints, capsys
):
    """--strict: the skip's warning, file and problem, becomes the one error line; a clipped
    box is not a bad sample and does not stop."""
    expect = build(Ctx(tmp_path, monkeypatch, checkpoints))
    if expect.outcome == "stop":  # a bad annotation file stops anyway
        return
    assert expect.argv[0] == "anchors" and expect.outcome in ("skip", "clip")
    skipped = run_cli(expect.argv, capsys)
    ran = run_cli([*expect.argv, "--strict"], capsys)
    assert "Traceback" not in ran.err
    if expect.outcome == "clip":
        assert (skipped.code, skipped.err, ran.code, ran.err) == (0, "", 0, "")
        return
    (warning,) = skipped.err_lines
    assert ran.code == 2
    assert ran.err_lines == [f"rpnkit anchors: error: {warning.removeprefix('warning: skipped ')}"]


def test_an_unreadable_image_met_in_two_epochs_is_one_warning_and_one_count(tmp_path, capsys):
    """4 steps of 2 over 4 images: the truncated one comes up twice; it is one bad image."""
    root = voc(tmp_path / "voc", odd_image=truncated)
    argv = ["train", "--data", root, *TRAIN, "--steps", "4", "--out", tmp_path / "run"]
    ran = run_cli(argv, capsys)
    assert ran.code == 0, ran.err
    assert len(ran.err_lines) == 1 and ran.err_lines[0].startswith(
        f"warning: skipped {root / 'images' / ODD}.jpg: unreadable or truncated image"
    )
    assert "trained 4 steps" in ran.out
    assert "1 image(s) could not be read and were left out" in ran.out.splitlines()


def test_strict_training_stops_at_a_truncated_image_read_in_a_worker(tmp_path, capsys):
    """--strict with a DataLoader worker: the worker's DataError is one line naming the file,
    not the traceback PyTorch re-raises; no checkpoint is written."""
    root = voc(tmp_path / "voc", odd_image=truncated)
    run = tmp_path / "run"
    argv = ["train", "--data", root, *TRAIN, "--workers", "1", "--strict", "--out", run]
    ran = run_cli(argv, capsys)
    image = root / "images" / f"{ODD}.jpg"
    assert ran.code == 2 and "Traceback" not in ran.err
    assert len(ran.err_lines) == 1, ran.err
    assert ran.err_lines[0].startswith(
        f"rpnkit train: error: {image}: unreadable or truncated image (image file is truncated"
    )
    assert not (run / "checkpoint.safetensors").exists()


def test_the_another_model_error_stays_a_readable_line(tmp_path, checkpoints, capsys):
    """A checkpoint of another model is one line naming the file, short enough to read."""
    argv = ["train", "--data", checkpoints.data, *TRAIN, "--steps", "4", "--out", tmp_path / "r"]
    argv += ["--preset", "tiny-cascade"]  # an RPN too, of other weights than the tiny one
    ran = run_cli([*argv, "--resume", checkpoints.rpn], capsys)
    assert ran.code == 2
    (line,) = ran.err_lines
    assert line.startswith(f"rpnkit train: error: {checkpoints.rpn}: the weights are those")
    assert len(line) <= 600, len(line)


def test_the_debug_flag_still_raises_for_a_bad_checkpoint(tmp_path, checkpoints):
    """The one-line errors above are the default; --debug gives the traceback instead."""
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(1).bytes(64))
    argv = ["--debug", "propose", str(checkpoints.image), "--checkpoint", str(path), *SIZE]
    with pytest.raises(ValueError, match="not a readable rpnkit checkpoint"):
        main(argv)


def test_the_corpus_holds_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({p.id for p in CASES}) == len(CASES)
