"""Which picture files a dataset reads, and what it says about them: Pillow's warnings named
by file, the suffixes read in folders and by annotations alike, boxes given twice."""

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpnkit.data.device_images import read_jpeg
from rpnkit.data.images import load_rgb
from rpnkit.data.readers import read_dataset
from rpnkit.data.records import DataNote, SkippedSample, image_size, named_pillow_warnings
from rpnkit.data.sources import index_for_input


def _jpeg_with_a_tag_past_its_end(path):
    """A 40x30 JPEG turned a quarter (EXIF orientation 6) whose ImageDescription points past
    the end of the file: Pillow warns "Tag data larger than file" as it opens it."""
    entries = struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x010E, 2, 400, 5000)
    ifd = struct.pack("<H", 2) + entries + struct.pack("<I", 0)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path, exif=exif)
    return path


def test_pillow_warning_about_a_file_names_it_once(tmp_path):
    path = _jpeg_with_a_tag_past_its_end(tmp_path / "a.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert image_size(path) == (30, 40)  # the orientation still read
    assert [type(w.message) for w in caught] == [DataNote]
    assert str(caught[0].message).startswith(f"{path}: Pillow: Tag data larger than file")
    assert caught[0].filename == __file__  # at the caller's line
    # the decoders name it too: files given as a list are read by them alone
    for decode in (load_rgb, read_jpeg):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decode(path)
        assert [str(w.message).split(": Pillow")[0] for w in caught] == [str(path)]


def test_a_possible_decompression_bomb_is_left_to_the_warning_filters(tmp_path, monkeypatch):
    from PIL.Image import DecompressionBombWarning

    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)
    with pytest.warns(DecompressionBombWarning):  # as raised, its own category
        load_rgb(tmp_path / "big.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecompressionBombWarning)
        with pytest.raises(DecompressionBombWarning):  # a filter's error still stops it
            load_rgb(tmp_path / "big.png")


def test_other_warnings_pass_through_the_naming():
    with pytest.warns(RuntimeWarning, match="not Pillow's"), named_pillow_warnings("x.jpg"):
        warnings.warn("not Pillow's", RuntimeWarning, stacklevel=1)


def _csv_dataset(tmp_path, rows):
    (tmp_path / "boxes.csv").write_text("".join(f"{r}\n" for r in rows))
    return tmp_path / "boxes.csv"


def test_a_picture_rpnkit_does_not_read_is_skipped_when_an_annotation_names_it(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.ico")  # Pillow reads it; a folder scan not
    csv = _csv_dataset(tmp_path, ["a.png,1,1,20,20,cat", "b.ico,1,1,20,20,cat"])
    with pytest.warns(SkippedSample, match=r"b\.ico: a \.ico image, which rpnkit does not read"):
        index = read_dataset(csv)
    assert [r.path.name for r in index.records] == ["a.png"]


@pytest.mark.parametrize("suffix", [".jp2", ".ppm", ".pgm", ".jpe"])
def test_satellite_and_netpbm_pictures_are_read_in_folders_and_by_name(tmp_path, suffix):
    Image.new("RGB" if suffix != ".pgm" else "L", (48, 32), 90).save(tmp_path / f"a{suffix}")
    csv = _csv_dataset(tmp_path, [f"a{suffix},1,2,30,20,cat"])
    index = read_dataset(csv)
    assert (index.records[0].width, index.records[0].height) == (48, 32)
    csv.unlink()  # now a folder of plain images, as `rpnkit detect` reads it
    assert [r.path.name for r in index_for_input(tmp_path).records] == [f"a{suffix}"]
    assert load_rgb(tmp_path / f"a{suffix}").shape == (32, 48, 3)


def test_boxes_given_twice_are_kept_and_noted_once(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "b.png")
    rows = ["a.png,1,1,20,20,cat", "a.png,1,1,20,20,cat", "a.png,1,1,20,20,dog"]
    rows += ["b.png,5,5,30,30,dog", "b.png,5,5,30,30,dog", "b.png,5,5,30,30,dog"]
    with pytest.warns(DataNote) as caught:
        index = read_dataset(_csv_dataset(tmp_path, rows))
    notes = [str(w.message) for w in caught if "repeat" in str(w.message)]
    assert len(notes) == 1
    assert "3 box(es) repeat another box of their image exactly" in notes[0]
    assert "a.png: 'cat' at (1, 1, 20, 20)" in notes[0]
    assert [len(r.boxes) for r in index.records] == [3, 3]  # kept, as given
    np.testing.assert_array_equal(index.records[1].boxes[0], [5, 5, 30, 30])


def test_only_the_main_thread_catches_warnings(tmp_path):
    # two threads swapping the process's warning state at once can leave it swapped: a
    # prefetching thread's decoder leaves Pillow's warnings as they are
    import threading

    path = _jpeg_with_a_tag_past_its_end(tmp_path / "a.jpg")
    filters = list(warnings.filters)
    caught_in_thread = []

    def decode():
        with warnings.catch_warnings(record=True) as caught:  # pytest's own state aside
            load_rgb(path)
        caught_in_thread.extend(caught)

    thread = threading.Thread(target=decode)
    thread.start()
    thread.join()
    assert warnings.filters == filters
    assert [Path(w.filename).parent.name for w in caught_in_thread] == ["PIL"]


def test_a_folder_s_sub_folders_are_said_not_to_be_read(tmp_path):
    for name in ("top.jpg", "cats/a.jpg", "dogs/b.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 6)).save(tmp_path / name)
    with pytest.warns(DataNote, match=r"its 2 sub-folder\(s\) \(cats/, dogs/\) are not read"):
        index = index_for_input(tmp_path)
    assert [r.path.name for r in index.records] == ["top.jpg"]
    (tmp_path / "top.jpg").unlink()  # a folder of class folders: the error says why
    with pytest.raises(ValueError, match=r"no image file at its top level, and its 2 sub-folder"):
        index_for_input(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder without sub-folders: no note
        assert len(index_for_input(tmp_path / "cats").records) == 1
