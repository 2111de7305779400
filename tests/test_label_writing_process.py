"""Label files written by the results' writing process (``CocoResultsWriter(also=...)``,
``rpnkit detect --labels``), not by the thread that launches the model: the same files as
``write_labels`` writes in the caller's thread, in order, and an error of the process raised
in the caller's thread, one line naming the file, nothing half-written left."""

import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import RACCOON
from PIL import Image

from rpnkit.cli import main
from rpnkit.engine.label_files import LabelWriter, write_labels
from rpnkit.engine.results import DetectionResult
from rpnkit.engine.writing import CocoResultsWriter

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the writing process is Linux's")
IMAGES = RACCOON / "images"


def _results(folder: Path, n: int = 5) -> list[DetectionResult]:
    """``n`` 64x48 pictures, i + 1 detections each (of classes cat, dog), one name met twice
    (``p0.png`` in two folders: ``p0-2``)."""
    results = []
    for i in range(n):
        path = folder / ("b" if i == n - 1 else "a") / f"p{i % (n - 1)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (90, 120, 150)).save(path)
        boxes = torch.tensor([[1.5 + k, 2.25, 30.0 + 3 * k, 40.75] for k in range(i + 1)])
        scores = torch.linspace(0.9, 0.5, i + 1)
        labels = torch.tensor([1 + k % 2 for k in range(i + 1)])
        results.append(
            DetectionResult(i, path.name, boxes, scores, labels, ("cat", "dog"), (48, 64), path)
        )
    return results


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its path there; a link by what it points to."""
    return {
        str(p.relative_to(folder)): os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


class PidRecorder:
    """A ``Sidecar`` that writes, per result, the process that wrote it and the result's
    image id, one line each, into ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> None:
        self.caller = os.getpid()

    def job(self, result):
        return result.image_id

    def open(self) -> None:
        self.file = open(self.path, "w")  # noqa: SIM115

    def write(self, job) -> None:
        self.file.write(f"{os.getpid()} {job}\n")

    def close(self, whole: bool = True) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None


@linux_only
def test_jobs_are_written_by_the_writing_process_in_order(tmp_path):
    recorder = PidRecorder(tmp_path / "pids.txt")
    results = _results(tmp_path / "pictures")
    with CocoResultsWriter(tmp_path / "r.json", background=True, also=recorder) as writer:
        assert writer._process is not None
        for result in results:
            writer.add(result)
    lines = [line.split() for line in (tmp_path / "pids.txt").read_text().splitlines()]
    assert [int(image_id) for _, image_id in lines] == [0, 1, 2, 3, 4]
    pids = {int(pid) for pid, _ in lines}
    assert len(pids) == 1 and os.getpid() not in pids  # one process, not the caller's


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("fmt", ["voc", "yolo", "csv"])
def test_the_process_writes_what_the_callers_thread_writes(tmp_path, fmt, background):
    results = _results(tmp_path / "pictures")
    write_labels(results, tmp_path / "here", format=fmt)
    labels = LabelWriter(tmp_path / "there", format=fmt)
    with CocoResultsWriter(tmp_path / "r.json", background=background, also=labels) as writer:
        for result in results:
            writer.add(result)
    assert _files(tmp_path / "there") == _files(tmp_path / "here")
    assert (labels.images, labels.entries) == (5, 15)
    assert labels.describe() == (
        f"{fmt} labels for 5 image(s) in {tmp_path / 'there'} (p0.png met again: written as "
        + {"voc": "p0-2.xml", "yolo": "p0-2.txt", "csv": str(tmp_path / "pictures/b/p0.png")}[fmt]
        + ")"
    )


@pytest.mark.parametrize("background", [False, True])
def test_a_file_the_process_cannot_write_is_the_callers_error_and_nothing_is_left(
    tmp_path, background
):
    out = tmp_path / "labels"
    (out / "data.yaml").mkdir(parents=True)  # the one YOLO file in the way: a folder
    labels = LabelWriter(out, format="yolo")
    writer = CocoResultsWriter(tmp_path / "r.json", background=background, also=labels)
    cannot = rf"{out / 'data.yaml'}: cannot write the labels there \(.*Is a directory"
    with pytest.raises(ValueError, match=cannot), writer:
        assert (writer._process is not None) == (background and sys.platform == "linux")
        for result in _results(tmp_path / "pictures"):
            writer.add(result)
    assert not (tmp_path / "r.json").exists()
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file of either left


@pytest.mark.parametrize("fmt", ["voc", "csv"])
def test_an_error_of_the_run_leaves_no_temporary_file_of_the_process(tmp_path, fmt):
    labels = LabelWriter(tmp_path / "labels", format=fmt)
    writer = CocoResultsWriter(tmp_path / "r.json", background=True, also=labels)
    with pytest.raises(RuntimeError, match="the model failed"), writer:
        for result in _results(tmp_path / "pictures"):
            writer.add(result)
        raise RuntimeError("the model failed")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "labels/detections.csv").exists()
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_detect_says_in_one_line_which_label_file_it_could_not_write(
    detector_checkpoint, tmp_path, capsys
):
    labels = tmp_path / "labels"
    (labels / "data.yaml").mkdir(parents=True)
    argv = ["detect", str(IMAGES / "raccoon-1.jpg"), str(IMAGES / "raccoon-10.jpg")]
    argv += ["--checkpoint", str(detector_checkpoint), "--out", str(tmp_path / "d.json")]
    argv += ["--labels", str(labels), "--labels-format", "yolo", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rpnkit detect: error: {labels / 'data.yaml'}: cannot write")
    assert not (tmp_path / "d.json").exists()


def test_a_job_pickles_to_the_same_texts_whatever_its_numbers_dtype_and_layout(tmp_path):
    import pickle

    from rpnkit.engine.label_files import csv_rows, voc_xml, yolo_txt

    (result,) = _results(tmp_path / "pictures", n=2)[1:]  # two detections
    wide = torch.cat([result.boxes, torch.zeros(2, 4)], 1)[:, :4]  # not contiguous
    for boxes, scores in [
        (result.boxes, result.scores),
        (wide, result.scores.double()),
        (result.boxes.bfloat16(), result.scores.half()),
    ]:
        given = DetectionResult(
            1, "p1.png", boxes, scores, result.labels, ("cat", "dog"), (48, 64), result.source
        )
        writer = LabelWriter(tmp_path / "labels")
        writer.prepare()
        job = pickle.loads(pickle.dumps(writer.job(given)))
        assert (job.stem, job.image) == ("p1", "p1.png")
        for text in (voc_xml, yolo_txt, csv_rows):
            assert text(job.result) == text(given)


class Failing(PidRecorder):
    """A ``Sidecar`` whose writing fails with an error of ``message``."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(path)
        self.error = error

    def write(self, job) -> None:
        raise self.error


@linux_only
def test_a_large_or_unpicklable_error_of_the_process_comes_back_short(tmp_path):
    # an error larger than the pipe (a file name that is no UTF-8 in a label's XML quoted
    # it whole) blocked the process in its send while the caller joined it: no end
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("not this one")

    results = _results(tmp_path / "images", 2)
    cases = [
        (ValueError("x.xml: cannot write " + "<object/>" * 30_000), ValueError, r"^x\.xml: "),
        (Unpicklable("quota exceeded"), RuntimeError, r"\(Unpicklable: quota exceeded\)"),
    ]
    for error, raised, message in cases:
        sidecar = Failing(tmp_path / "side.txt", error)
        writer = CocoResultsWriter(tmp_path / "r.json", background=True, also=sidecar)
        with pytest.raises(raised, match=message) as caught, writer as out:
            for result in results:
                out.add(result)
        assert len(str(caught.value)) < 2200
        assert not (tmp_path / "r.json").exists()
