"""A one-shot iterator of images (a generator, a camera's frames) given to ``Predictor``'s
``iter_detections`` / ``iter_proposals`` (``runtime.streams``): read a batch at a time, so that
the first results come after the first batch's images (a list was read whole first, and an
endless stream never gave one), with the results a list of the same images gets."""

import itertools

import numpy as np
import pytest
import torch
from conftest import RACCOON
from PIL import Image

from rpnkit import load

FILES = [RACCOON / "images" / f"raccoon-{n}.jpg" for n in (1, 2, 3, 4, 5)]


@pytest.fixture(scope="module")
def frames():
    """Five raccoon photographs as RGB arrays, as a camera or a video decoder gives them."""
    return [np.asarray(Image.open(f).convert("RGB")) for f in FILES]


def _counted(frames, produced: list):
    for frame in frames:
        produced.append(1)
        yield frame


def test_a_generator_is_read_a_batch_at_a_time(detector_checkpoint, frames):
    model = load(detector_checkpoint, device="cpu")
    produced = []
    results = model.iter_detections(_counted(frames, produced), batch_size=2)
    assert len(produced) == 1  # at the call: its checks, and the first image (a file?)
    first = next(results)
    assert len(produced) == 2 and first.image_id == 0 and first.file_name == "image-0"
    produced.clear()
    endless = itertools.cycle(frames)  # a camera: never ends
    taken = list(itertools.islice(model.iter_proposals(endless, batch_size=2, top=10), 3))
    assert [r.image_id for r in taken] == [0, 1, 2]


def test_a_stream_gets_the_results_a_list_gets(detector_checkpoint, frames):
    model = load(detector_checkpoint, device="cpu")
    for method in ("iter_detections", "iter_proposals"):
        listed = list(getattr(model, method)(frames, batch_size=2))
        streamed = list(getattr(model, method)(iter(frames), batch_size=2))
        assert [r.image_id for r in streamed] == [r.image_id for r in listed] == [0, 1, 2, 3, 4]
        assert [r.file_name for r in streamed] == [f"image-{i}" for i in range(5)]
        for a, b in zip(listed, streamed):
            torch.testing.assert_close(a.boxes, b.boxes)
            torch.testing.assert_close(a.scores, b.scores)
    # names given count on across the batches; files keep their own
    names = [f"cam/{i}.jpg" for i in range(5)]
    streamed = model.detect(iter(frames), batch_size=2, names=names)
    assert [r.file_name for r in streamed] == names
    paths = model.detect(iter(FILES), batch_size=2)
    assert [(r.image_id, r.file_name) for r in paths] == [(i, f.name) for i, f in enumerate(FILES)]


def test_a_stream_s_options_are_checked_at_the_call_and_its_skips_gathered(
    detector_checkpoint, frames, tmp_path
):
    model = load(detector_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        model.iter_detections(iter(frames), batch_size=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.iter_proposals(iter(frames), colour="red")
    with pytest.raises(ValueError, match=r"^3 names for a stream of more images$"):
        model.detect(iter(frames), batch_size=2, names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^6 names for a stream of 5 images$"):
        model.detect(iter(frames), batch_size=2, names=list("abcdef"))
    # an image that cannot be read is skipped and listed, in the list the call leaves in
    # model.skipped, for the whole stream, even where the caller stops early
    gone = [tmp_path / "gone-a.jpg", tmp_path / "gone-b.jpg"]
    stream = iter([frames[0], gone[0], frames[1], gone[1], frames[2]])
    results = model.iter_detections(stream, batch_size=2)
    skipped = model.skipped
    with pytest.warns(UserWarning):
        found = list(itertools.islice(results, 2))
    results.close()
    assert [r.image_id for r in found] == [0, 2] and model.skipped is skipped
    assert len(skipped) == 2 and "gone-a.jpg" in skipped[0] and "gone-b.jpg" in skipped[1]
    # file paths from a generator (a glob): read as a list, decoding beside the model
    missing = [tmp_path / "gone-1.jpg", FILES[0], FILES[1], tmp_path / "gone-2.jpg", FILES[2]]
    with pytest.warns(UserWarning):
        found = model.detect(iter(missing), batch_size=2)
    assert [r.file_name for r in found] == [f.name for f in FILES[:3]]
    assert [r.image_id for r in found] == [1, 2, 4]
    assert len(model.skipped) == 2 and "gone-1.jpg" in model.skipped[0]
