"""Detections as annotations in the ecosystem's label formats, to review or correct in labelImg
or CVAT, or to train another model on (pseudo-labels): ``LabelWriter`` takes each image's
``DetectionResult`` as it comes (``rpnkit detect --labels DIR``), ``write_labels`` many at
once. What is written reads back with rpnkit's own readers (``data.read_dataset``) as the
detections' boxes, to the format's rounding, and class names. Proposals (``ProposalResult``,
``rpnkit propose --labels DIR``) are written on request (``proposal_class``) as detections of
one class, ``object`` for the command: the boxes of an open-world RPN to start annotating a
new dataset from.

The layouts, in the folder given:

- ``voc``: ``<stem>.xml`` per image: ``<filename>`` (the image's file name), ``<path>`` (the
  image file's absolute path, when it came from one, as labelImg writes it), ``<size>``
  (width, height, depth 3: images are read as RGB), and one ``<object>`` per detection:
  ``<name>`` (the class name), ``<pose>``, ``<truncated>``, ``<difficult>`` 0, ``<score>``
  (to 1e-5: an element that VOC readers, labelImg and rpnkit's ignore) and ``<bndbox>`` in
  VOC's 1-based inclusive pixel indices: xyxy rounded to whole pixels, then ``xmin + 1``,
  ``ymin + 1`` (what ``data/voc.py`` turns back into ``(xmin - 1, ymin - 1, xmax, ymax)``).
- ``yolo``: ``labels/<stem>.txt`` per image, a ``class cx cy w h`` line per detection (class:
  the 0-based index into the checkpoint's class names; the rest normalised to the image size,
  to 1e-6), ``images/<stem><suffix>``, a symbolic link to the image's file (relative where
  the system allows: the folder moved with the images still reads), and ``data.yaml`` with
  ``names`` and ``train``/``val``: ``images``, where YOLO looks for the images whose labels
  are in ``labels/``: the folder is a dataset that rpnkit and Ultralytics read as it is. An
  image already there (labels written beside their images) is left as it is; an image given
  in memory has no file to link; where links cannot be made (a filesystem without them) one
  warning says so and the images are left to the user to put there. No score column:
  Ultralytics' loader and rpnkit's reader refuse a 6th.
- ``csv``: ``detections.csv``, raccoon's ``filename,width,height,class,xmin,ymin,xmax,ymax``
  (xyxy pixels to 0.01, as ``data/csv_boxes.py`` reads them) and ``score`` (to 1e-5; readers
  of that header ignore other columns); an image without detections is one row with empty
  class and box fields (keras-retinanet's convention, which rpnkit reads).

Every image gets its file (an empty one without detections), so the folder is the whole set.
Images of the same name (from two folders of a dataset) do not overwrite each other: a stem
met again in a run (compared without case) gets ``-2``, ``-3``... (``a-2.xml``; YOLO's
``labels/a-2.txt`` and ``images/a-2.jpg``), and the formats that name the image (VOC's
``<filename>``, the CSV's ``filename``) give its full path instead, which rpnkit's readers
follow (an image given in memory: ``a-2.jpg``). Each file is written to a temporary file
renamed into place, so a file at its path is always whole; the CSV is renamed at the end
(removed on an error), as ``CocoResultsWriter`` does.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch
import yaml

from ..data.records import listed
from .paths import output_folder, temporary_beside, writer_token
from .results import DetectionResult, ProposalResult, each_result

LABEL_FORMATS = ("voc", "yolo", "csv")
CSV_NAME = "detections.csv"
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax", "score")
YOLO_LABELS = "labels"  # the label files' folder, beside the images' (YOLO_IMAGES)
YOLO_IMAGES = "images"
PROPOSAL_CLASS = "object"  # the one class of proposals written by ``rpnkit propose --labels``


@dataclasses.dataclass(frozen=True)
class LabelJob:
    """One image's labels as ``LabelWriter.write`` takes them: its label file's ``stem``, the
    ``image`` name the file gives it and its detections. Pickled (for the writing process)
    with the numbers' bytes, unpickled as numpy arrays (which the formats' texts read as they
    read tensors, with ``tolist``): 14 us for 100 detections on the 2-core CPU, where
    pickling numpy arrays takes 13 us each and tensors 50."""

    stem: str
    image: str
    result: DetectionResult

    def __reduce__(self):
        r = self.result
        numbers = [_packed(values) for values in (r.boxes, r.scores, r.labels)]
        fields = (r.image_id, r.file_name, r.class_names, r.image_size, r.source, r.category_ids)
        return _unpickled_job, (self.stem, self.image, numbers, fields)


def _unpickled_job(stem: str, image: str, numbers: list, fields: tuple) -> LabelJob:
    boxes, scores, labels = (np.frombuffer(b, dtype=d).reshape(shape) for d, shape, b in numbers)
    image_id, file_name, class_names, image_size, source, category_ids = fields
    result = DetectionResult(
        image_id, file_name, boxes, scores, labels, class_names, image_size, source, category_ids
    )
    return LabelJob(stem, image, result)


class LabelWriter:
    """``with LabelWriter(folder, format="voc") as out: out.add(result)``: each
    ``DetectionResult`` added written as ``format`` into ``folder`` (module docstring);
    ``images`` counts the images written, ``entries`` their detections, and ``renamed`` lists
    the (file name, label file) of the images whose name was met before in the run.
    ``proposal_class``: a class name to write each ``ProposalResult`` added as detections of
    that one class (their scores kept where the format has a place); None refuses them.

    Given to ``CocoResultsWriter(also=)`` (``rpnkit detect --labels``), its files are written
    by the results' writing process, in order, not in the thread that launches the model:
    that thread only names and counts each image (``job``) and pickles it, 0.10-0.18 ms of
    its CPU time per image of 100 detections where writing them took 0.8-1.5 ms (2-core CPU,
    loaded). The process works on its own copy of the writer, forked after ``prepare``: the
    names and counts are this copy's, the open CSV the process's."""

    def __init__(
        self, folder: str | Path, *, format: str = "voc", proposal_class: str | None = None
    ) -> None:
        if format not in LABEL_FORMATS:
            raise ValueError(f"label format {format!r}: use one of {', '.join(LABEL_FORMATS)}")
        self.folder = Path(folder)
        self.format = format
        self.proposal_class = proposal_class
        self.images = self.entries = 0
        self.renamed: list[tuple[str, str]] = []
        self._stems: set[str] = set()
        self._token = writer_token()
        self._csv: tuple[Path, io.TextIOBase, object] | None = None
        self._open = self._prepared = False
        self._names: tuple[str, ...] | None = None
        self._linking = True  # YOLO's images linked, until a link cannot be made
        self._taken = 0  # images not linked: their names are other files'

    def __enter__(self) -> LabelWriter:
        self.prepare()
        self.open()
        return self

    def add(self, result: DetectionResult | ProposalResult) -> None:
        """One image's detections into its file (VOC, YOLO) or rows (CSV)."""
        if not self._open:
            raise RuntimeError("LabelWriter.add is for inside its with block")
        self.write(self.job(result))

    def __exit__(self, kind, error, trace) -> None:
        self.close(whole=kind is None)

    # The steps of ``with``/``add``, which ``CocoResultsWriter(also=...)`` runs apart:
    # ``prepare`` and ``job`` in the caller's thread, the rest in its writing process.

    def prepare(self) -> None:
        """Before any work, in the caller's thread: the folder checked (``check_label_folder``),
        made and written to once; a new run's names and counts."""
        check_label_folder(self.folder, self.format)
        folder = output_folder(self.folder, to="to write the labels in")
        if self.format == "yolo":
            folder = output_folder(self.folder / YOLO_LABELS, to="to write the labels in")
        probe = self._tmp(folder / "probe")
        try:  # a folder that cannot be written to says so before any inference
            open(probe, "x").close()
            probe.unlink()
        except OSError as err:
            raise ValueError(f"{self.folder}: cannot write the labels there ({err})") from err
        self.images, self.entries, self.renamed, self._stems = 0, 0, [], set()
        self._prepared = True

    def job(self, result: DetectionResult | ProposalResult) -> LabelJob:
        """The caller's part of one image, in order: the result checked, its label file's
        stem chosen (names met before) and counted; what ``write`` writes, small to pickle."""
        if not self._prepared:
            raise RuntimeError("LabelWriter.job comes after prepare (or inside its with block)")
        result = self._detections(result)
        stem, image = self._names_of(result)
        self.images += 1
        self.entries += len(result.scores)
        return LabelJob(stem, image, result)

    def open(self) -> None:
        """Where the files are written, before the first: the CSV's temporary file."""
        if self.format == "csv":
            tmp = self._tmp(self.folder / CSV_NAME)
            file = open(tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115 (``close``)
            rows = csv.writer(file, lineterminator="\n")
            rows.writerow(CSV_COLUMNS)
            self._csv = (tmp, file, rows)
        self._names, self._linking, self._open, self._taken = None, True, True, 0

    def write(self, job: LabelJob) -> None:
        """One image's file (VOC, YOLO: and its image's link) or rows (CSV)."""
        result = job.result
        if self.format == "voc":
            self._replace(self.folder / f"{job.stem}.xml", voc_xml(result, job.image))
        elif self.format == "yolo":
            self._replace(self.folder / YOLO_LABELS / f"{job.stem}.txt", yolo_txt(result))
            self._link_image(job.stem, result.source)
            if self._names is None:  # the class names YOLO tools need, once
                self._names = tuple(result.class_names)
                self._replace(self.folder / "data.yaml", data_yaml(self._names))
        else:
            self._csv[2].writerows(csv_rows(result, job.image))

    def close(self, whole: bool = True) -> None:
        """The end: the CSV renamed into place (``whole``) or removed; without ``whole``,
        every temporary file of this writer removed too (one a stopped process left).
        Again, or where nothing was opened: only that."""
        self._open = self._prepared = False
        written, self._csv = self._csv, None
        try:
            if written is not None:
                written[1].close()
                if whole:
                    written[0].replace(self.folder / CSV_NAME)
        except OSError as err:
            path = self.folder / CSV_NAME
            raise ValueError(f"{path}: cannot write the labels there ({err})") from err
        finally:
            if written is not None:
                written[0].unlink(missing_ok=True)  # gone already once renamed
            if not whole:
                self._remove_temporaries()

    def describe(self) -> str:
        """What was written, for the command's last line: ``voc labels for 3 image(s) in
        out/`` and the images whose name was met before."""
        text = f"{self.format} labels for {self.images} image(s) in {self.folder}"
        if self.renamed:
            name, written = self.renamed[0]
            more = f" (and {len(self.renamed) - 1} more)" if len(self.renamed) > 1 else ""
            text += f" ({name} met again: written as {written}{more})"
        return text

    def _detections(self, result: DetectionResult | ProposalResult) -> DetectionResult:
        """``result`` as detections: proposals as ``proposal_class`` (label 1 each), or a
        TypeError."""
        if isinstance(result, DetectionResult):
            return result
        if isinstance(result, ProposalResult) and self.proposal_class is not None:
            return as_detections(result, self.proposal_class)
        proposals = isinstance(result, ProposalResult)
        got = "proposals (no class: give proposal_class)" if proposals else type(result).__name__
        raise TypeError(f"label files are written from detections (DetectionResult), got {got}")

    def _names_of(self, result: DetectionResult) -> tuple[str, str]:
        """The label file's stem and how the image is named in it: its file name, or, for a
        stem met before in the run, ``stem-N`` and the image's full path (its file name with
        that stem, for an image given in memory)."""
        name = Path(result.file_name).name or "image"
        base = Path(name).stem or name
        stem, n = base, 1
        while stem.casefold() in self._stems:
            n += 1
            stem = f"{base}-{n}"
        self._stems.add(stem.casefold())
        if n == 1:
            return stem, name
        source = result.source
        image = str(Path(source).resolve()) if source is not None else stem + Path(name).suffix
        suffix = {"voc": ".xml", "yolo": ".txt"}.get(self.format)
        self.renamed.append((name, f"{stem}{suffix}" if suffix else image))
        return stem, image

    def _link_image(self, stem: str, source: Path | None) -> None:
        """``images/<stem><suffix>``: a symbolic link to the image's file ``source``, made
        beside and renamed into place, where YOLO looks for it; nothing for an image given in
        memory or one there already, nor where another file has the link's name
        (``_name_taken``). The first link that cannot be made is one warning, and no more are
        tried: the labels are written, the images are the user's to put there."""
        if source is None or not self._linking:
            return
        link = self.folder / YOLO_IMAGES / f"{stem}{Path(source).suffix}"
        tmp = self._tmp(link)
        try:
            if os.path.lexists(link) and not link.is_symlink():  # a file of the user's, kept
                if not os.path.samefile(link, source):  # (not the image: labels beside it)
                    self._name_taken(link)
                return
            if link.exists() and os.path.samefile(link, source):
                return  # a link to the image already
            link.parent.mkdir(exist_ok=True)
            os.symlink(_link_target(Path(source), link.parent), tmp)
            os.replace(tmp, link)
        except OSError as err:
            self._linking = False
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            warnings.warn(
                f"{link.parent}: cannot link the images there ({err.strerror or err}); the "
                "labels are written: put the images, or links to them, there for YOLO to "
                "read them",
                stacklevel=3,
            )

    def _name_taken(self, link: Path) -> None:
        """An image whose link's name is another file's: not linked (that file is never
        replaced); the first such is one warning, for all."""
        self._taken += 1
        if self._taken == 1:
            warnings.warn(
                f"{link}: another file has this name, kept: this image is not linked there "
                "(nor any other whose name is taken), and its labels would read with that "
                "file: write the labels to an empty folder",
                stacklevel=3,
            )

    def _remove_temporaries(self) -> None:
        for folder in (self.folder, self.folder / YOLO_LABELS, self.folder / YOLO_IMAGES):
            for tmp in folder.glob(f".*.{self._token}.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _tmp(self, path: Path) -> Path:
        return temporary_beside(path, self._token)

    def _replace(self, path: Path, text: str) -> None:
        tmp = self._tmp(path)
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except (OSError, UnicodeError) as err:  # UnicodeError: a name not valid UTF-8
            tmp.unlink(missing_ok=True)
            raise ValueError(f"{path}: cannot write the labels there ({err})") from err


def check_label_folder(folder: str | Path, format: str) -> None:
    """A ValueError when ``folder`` holds label files of ``format`` already (VOC's ``*.xml``,
    YOLO's ``labels/*.txt``): an earlier run's would stay beside this one's, and the folder
    read as a dataset would hold both. The CSV, one file replaced whole, is not refused."""
    folder = Path(folder)
    pattern = {"voc": "*.xml", "yolo": f"{YOLO_LABELS}/*.txt"}.get(format)
    if pattern is None or not folder.is_dir():
        return
    found = sorted(p.name for p in folder.glob(pattern))
    if found:
        raise ValueError(
            f"{folder}: holds {len(found)} {format} label file(s) already ({listed(found, 3)}): "
            "the labels "
            "of a run are the whole set: give a new folder, or empty this one"
        )


def write_labels(
    results: Iterable[DetectionResult | ProposalResult],
    folder: str | Path,
    *,
    format: str = "voc",
    proposal_class: str | None = None,
) -> Path:
    """Every result's detections into ``folder`` as ``format`` (``"voc"``, ``"yolo"`` or
    ``"csv"``; the layouts: the module docstring) as they come (one result alone too);
    ``folder``. ``proposal_class``: proposals written as detections of that class (e.g.
    ``PROPOSAL_CLASS``, "object"); None refuses them."""
    results = each_result(results, "write_labels")
    with LabelWriter(folder, format=format, proposal_class=proposal_class) as out:
        for result in results:
            out.add(result)
    return out.folder


def as_detections(result: ProposalResult, class_name: str = PROPOSAL_CLASS) -> DetectionResult:
    """One image's proposals as detections of the one class ``class_name`` (label 1 each),
    boxes, scores and the image as they are."""
    labels = torch.ones(len(result.scores), dtype=torch.int64)
    return DetectionResult(
        result.image_id,
        result.file_name,
        result.boxes,
        result.scores,
        labels,
        (class_name,),
        result.image_size,
        result.source,
    )


def _packed(values) -> tuple[str, tuple[int, ...], bytes]:
    """A tensor's or array's numbers as (dtype, shape, bytes) (bfloat16 as float32, which
    numpy lacks)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    values = np.asarray(values)
    return values.dtype.str, values.shape, values.tobytes()


def _link_target(image: Path, folder: Path) -> str:
    """What a link in ``folder`` to ``image`` holds: the image's path from the folder, both
    resolved (the system reads a link from the folder it is really in), or the image's
    absolute path where there is none (another drive)."""
    image_path = os.path.realpath(image)
    try:
        return os.path.relpath(image_path, os.path.realpath(folder))
    except ValueError:
        return image_path


# ---------------------------------------------------------------- the formats' texts


def voc_xml(result: DetectionResult, image: str | None = None) -> str:
    """One image's Pascal VOC XML (module docstring), tab-indented as labelImg writes it;
    ``image``: its ``<filename>`` (default the result's file name). Written as text, not
    through ElementTree, which took 3.8 ms for 100 detections: half of ``detect``'s time on
    an H200 (docs/performance.md)."""
    height, width = result.image_size
    head = [f"<annotation>\n\t<filename>{escape(image or Path(result.file_name).name)}</filename>"]
    if result.source is not None:
        head.append(f"\t<path>{escape(str(Path(result.source).resolve()))}</path>")
    head.append(
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>"
    )
    names = [escape(name) for name in result.class_names]
    boxes = voc_boxes(_boxes(result), width, height).tolist()
    labels = result.labels.reshape(-1).tolist()
    objects = [
        _VOC_OBJECT.format(names[int(k) - 1], _decimal(score, 5), *box)
        for k, score, box in zip(labels, _scores(result), boxes, strict=True)
    ]
    return "\n".join([*head, *objects, "</annotation>"]) + "\n"


_VOC_OBJECT = (
    "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n"
    "\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<score>{}</score>\n"
    "\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n"
    "\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>"
)


def voc_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(D, 4) xyxy pixels -> (D, 4) int VOC ``xmin ymin xmax ymax``: 1-based inclusive
    indices of the box rounded to whole pixels in the image, at least one pixel wide and
    high (what rpnkit's reader reads back as the rounded box)."""
    corners = _spans(boxes, width, height, step=1.0)
    return (corners + np.array([1, 1, 0, 0])).astype(np.int64)


def yolo_txt(result: DetectionResult) -> str:
    """One image's YOLO label file: ``class cx cy w h`` per detection, class 0-based, the
    rest normalised to the image size (to 1e-6); empty without detections."""
    height, width = result.image_size
    boxes = _spans(_boxes(result), width, height, step=0.0) / [width, height, width, height]
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    lines = []
    for label, cxcy, wh in zip(result.labels.tolist(), centres, sizes, strict=True):
        numbers = " ".join(_decimal(v, 6) for v in (*cxcy, *wh))
        lines.append(f"{int(label) - 1} {numbers}\n")
    return "".join(lines)


def data_yaml(class_names: Iterable[str]) -> str:
    """The data.yaml of YOLO labels: where the images are (``images/``, beside ``labels/``)
    and the class names by 0-based id."""
    names = {"names": dict(enumerate(class_names))}
    return (
        "# rpnkit's detections (or proposals) as YOLO labels: labels/<stem>.txt, 'class cx cy\n"
        "# w h' normalised, no score; images/<stem>.<ext>: a link to each image, where YOLO\n"
        "# looks for the image of labels/<stem>.txt (images there where no link could be made).\n"
        f"train: {YOLO_IMAGES}\nval: {YOLO_IMAGES}\nnc: {len(names['names'])}\n"
        + yaml.safe_dump(names, sort_keys=False, allow_unicode=True)
    )


def csv_rows(result: DetectionResult, image: str | None = None) -> list[list[str]]:
    """One image's rows of ``detections.csv`` (``CSV_COLUMNS``): xyxy pixels to 0.01, score
    to 1e-5; one row of empty class and box fields without detections. ``image``: its
    ``filename`` (default the result's file name)."""
    height, width = result.image_size
    head = [image or Path(result.file_name).name, str(width), str(height)]
    if not len(result.scores):
        return [head + [""] * 6]
    boxes = _spans(_boxes(result), width, height, step=0.01)
    return [
        [*head, name, *(_decimal(v, 2) for v in box), _decimal(score, 5)]
        for name, box, score in zip(result.names, boxes.tolist(), _scores(result), strict=True)
    ]


def _boxes(result: DetectionResult) -> np.ndarray:
    return np.asarray(result.boxes.tolist(), dtype=np.float64).reshape(-1, 4)


def _scores(result: DetectionResult) -> list[float]:
    return [float(s) for s in result.scores.reshape(-1).tolist()]


def _spans(boxes: np.ndarray, width: int, height: int, *, step: float) -> np.ndarray:
    """(D, 4) xyxy boxes in the image, rounded to ``step`` px (0: not rounded), each at least
    ``step`` wide and high where rounding would close it."""
    limits = np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(boxes, 0, limits)
    if step:
        boxes = np.round(boxes / step) * step
        low = np.minimum(boxes[:, :2], limits[:2] - step)
        boxes = np.concatenate([low, np.maximum(boxes[:, 2:], low + step)], axis=1)
    return boxes


def _decimal(value: float, places: int) -> str:
    """``value`` to ``places`` decimals, without trailing zeros: ``12``, ``12.5``, ``0.25``."""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
