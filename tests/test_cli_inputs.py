"""What propose and detect take on the command line: several image files (a shell glob) as
well as one image, folder or dataset, and a results file named .json."""

import json

from conftest import RACCOON

from rpnkit.cli import main

IMAGES = RACCOON / "images"


def test_detect_takes_several_image_files_as_a_glob_gives_them(detector_checkpoint, tmp_path):
    files = [str(IMAGES / f"raccoon-{i}.jpg") for i in (1, 2, 3)]
    out = tmp_path / "d.json"
    common = ["--checkpoint", str(detector_checkpoint), "--out", str(out), "--no-progress"]
    assert main(["detect", *files, *common, "--score", "0.05"]) == 0
    named = {entry["file_name"] for entry in json.loads(out.read_text())}
    assert named == {f"raccoon-{i}.jpg" for i in (1, 2, 3)}


def test_several_inputs_are_image_files_only(detector_checkpoint, tmp_path, capsys):
    image = str(IMAGES / "raccoon-1.jpg")
    common = ["--checkpoint", str(detector_checkpoint), "--out", str(tmp_path / "d.json")]
    for other in (str(IMAGES), str(RACCOON / "train_labels.csv")):
        assert main(["detect", image, other, *common]) == 2
        err = capsys.readouterr().err
        assert f"{other}: of several inputs each is an image file; a folder or a dataset" in err
    assert not (tmp_path / "d.json").exists()
    missing = str(tmp_path / "none.safetensors")  # refused before the checkpoint is read
    assert main(["detect", image, str(IMAGES), "--checkpoint", missing]) == 2
    assert "of several inputs each is an image file" in capsys.readouterr().err
    # the dataset options that one image refuses, several refuse too
    split = ["--split-file", str(RACCOON / "test_labels.csv")]
    assert main(["detect", image, image, *common, *split]) == 2
    assert "a list of images: --split-file (split_file=) apply to datasets only" in (
        capsys.readouterr().err
    )


def test_results_go_to_a_json_file(detector_checkpoint, tmp_path, capsys):
    image = str(IMAGES / "raccoon-1.jpg")
    for command in ("detect", "propose"):
        for out in (str(tmp_path / "d.csv"), "-"):
            args = [command, image, "--checkpoint", str(detector_checkpoint), "--out", out]
            assert main(args) == 2
            err = capsys.readouterr().err
            assert (
                f"--out {out}: the results are written as COCO results JSON: name it .json" in err
            )
            assert "--labels DIR" in err  # where CSV goes
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_show_finds_a_csv_s_images_with_images_and_says_when_none_is_found(tmp_path, capsys):
    labels = str(RACCOON / "train_labels.csv")  # its paths are file names: images/ elsewhere
    out = str(tmp_path / "l.png")
    assert main(["show", "labels", labels, "--out", out, "--preset", "tiny"]) == 2
    err = capsys.readouterr().err  # not "index 0 out of range (0 images)"
    assert f"{labels}: none of its images could be read (the lines above say why)" in err
    assert "give --images DIR" in err
    located = ["--images", str(IMAGES), "--preset", "tiny"]
    assert main(["show", "labels", labels, "--out", out, *located]) == 0
    assert (tmp_path / "l.png").is_file()
