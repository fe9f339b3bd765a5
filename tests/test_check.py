"""``skyseg check``: sky shares on real panoramas, and a labelled set's sky convention."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from skyseg.cli.commands import main
from skyseg.errors import ConfigError
from skyseg.evaluation.check import (
    LabelsOptions,
    check_labels,
    count_sky_coloured_not_sky,
    find_panoramas,
)
from skyseg.io import write_hdr, write_png

from .conftest import shared_path

BROKEN_HDR = b"#?RADIANCE\nnot an image"


@pytest.fixture(autouse=True)
def _restore_logging():
    """``main`` sends skyseg's log to the (captured) stderr of its test: undo that after."""
    logger = logging.getLogger("skyseg")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def _branches(size: int = 300) -> np.ndarray:
    """Bright sky (200) over dark ground (40), dark branches (20) every 4th row of the crown.

    The crown is rows 134-149, columns 150-299: 4 branch rows and 12 rows of sky between.
    """
    image = np.full((size, size, 3), 200.0, np.float32)
    image[150:] = 40.0
    image[134:150:4, 150:] = 20.0
    return image


def test_counts_sky_between_branches_labelled_tree():
    image = _branches()
    mask = np.zeros((300, 300), np.uint8)
    mask[:150] = 1
    tree_labelled = mask.copy()
    tree_labelled[134:150, 150:] = 0  # one labeller: the whole crown is tree
    alike_tree, sky_tree = count_sky_coloured_not_sky(image, tree_labelled)
    alike_sky, sky_sky = count_sky_coloured_not_sky(image, mask)
    # The gaps between the branches (sky brightness, labelled tree) are counted;
    # the branches themselves and the dark ground are not.
    gaps = int((image[134:150, 150:, 0] == 200.0).sum())
    assert 0.9 * gaps <= alike_tree <= gaps
    assert alike_sky == 0
    assert sky_sky == 150 * 300 and sky_tree == 150 * 300 - 16 * 150


def _labelled_set(folder):
    """Images of three groups and their COCO export; one labelled image is not on disk.

    ``treeAA``: the crown labelled tree (a non-sky rectangle); ``skyyBB``: the crown left
    sky; ``tinyCC``: 25 sky pixels only (left out); ``goneDD``: no image file.
    """
    images = folder / "images"
    images.mkdir()
    picture = _branches().astype(np.uint8)
    entries, annotations = [], []
    sky = [0, 0, 300, 0, 300, 150, 0, 150]
    crown = [150, 134, 300, 134, 300, 150, 150, 150]
    for number, (stem, polygons) in enumerate([
            ("treeAA_001", [(1, sky), (2, crown)]), ("treeAA_002", [(1, sky), (2, crown)]),
            ("skyyBB_001", [(1, sky)]), ("tinyCC_001", [(1, [0, 0, 5, 0, 5, 5, 0, 5])]),
            ("goneDD_001", [(1, sky)])]):
        if not stem.startswith("gone"):
            write_png(images / f"{stem}.png", picture)
        entries.append({"id": number, "width": 300, "height": 300,
                        "file_name": f"images/{number:08x}-{stem}.png"})
        annotations += [{"id": 10 * number + k, "image_id": number, "category_id": category,
                         "segmentation": [polygon]}
                        for k, (category, polygon) in enumerate(polygons)]
    coco = folder / "result.json"
    coco.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": [
        {"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}]}))
    return images, coco


def test_labels_check_compares_groups_by_hand(tmp_path, capsys):
    images, coco = _labelled_set(tmp_path)
    # Hand count: sky rows 0-149 less the 16x150 crown; gaps 12 of its 16 rows.
    sky, gaps = 150 * 300 - 16 * 150, 12 * 150
    assert main(["check", "labels", "--coco", str(coco), "--images", str(images)]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1:] for line in captured.out.splitlines()[1:]}
    assert set(rows) == {"treeAA", "skyyBB"}  # tinyCC: under 100 sky pixels
    assert rows["skyyBB"] == ["1", "0.0000"]
    assert rows["treeAA"][0] == "2"
    assert 0.9 * gaps / sky - 1e-4 <= float(rows["treeAA"][1]) <= gaps / sky + 1e-4
    assert "goneDD_001" in captured.err.splitlines()[-1]  # listed at the end: status 1


def test_labels_check_goes_on_past_unreadable_images(tmp_path):
    images, coco = _labelled_set(tmp_path)
    (images / "skyyBB_001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    from skyseg.log import BatchReport

    report = BatchReport("check labels")
    groups = check_labels(coco, images, LabelsOptions(group_chars=6), report=report,
                          group_chars=4)
    assert [(g.name, g.images) for g in groups] == [("tree", 2)]
    failed = sorted(item for item, _ in report.failures)
    assert any("skyyBB_001.png" in item for item in failed) and "goneDD_001" in failed
    with pytest.raises(ConfigError, match="goneDD_001: labelled in .* check --images"):
        check_labels(coco, images)  # no report: the first failure is raised
    with pytest.raises(ConfigError, match="--group-chars must be at least 1, got 0"):
        check_labels(coco, images, group_chars=0)
    with pytest.raises(TypeError):
        check_labels(coco, images, group_letters=4)


def test_labels_check_needs_its_inputs(tmp_path, capsys):
    images, coco = _labelled_set(tmp_path)
    assert main(["check", "labels", "--coco", str(tmp_path / "none.json"),
                 "--images", str(images)]) == 2
    assert "none.json" in capsys.readouterr().err
    assert main(["check", "labels", "--coco", str(coco), "--images", str(tmp_path / "no")]) == 2
    assert "check --images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["check", "labels", "--images", str(images)])  # --coco is required
    with pytest.raises(SystemExit):
        main(["check"])  # a check must be named


@pytest.mark.slow
def test_labels_check_on_camvid_finds_its_two_conventions(capsys):
    camvid = shared_path("camvid-sky")
    assert main(["check", "labels", "--coco", str(camvid / "result.json"),
                 "--images", str(camvid / "images")]) == 0
    out = capsys.readouterr().out
    print(out)  # the figures, for the log
    # As scripts/check_label_convention.py printed them (its last version, same data):
    # 0001TP leaves the gaps between bare branches sky, the two others label them tree.
    assert out.splitlines()[1:] == ["0001TP       62  0.0370", "0006R0      101  0.1303",
                                    "0016E5      304  0.0963"]


def _panoramas(folder, *, labels=()):
    for group in ("indoor", "outdoor"):
        (folder / group).mkdir(parents=True)
        write_hdr(folder / group / f"{group}.hdr", np.full((32, 64, 3), 0.5, np.float32))
    (folder / "labels").mkdir()
    for stem in labels:
        write_png(folder / "labels" / f"{stem}.png", np.zeros((32, 64), np.uint8))
    return folder


def test_panoramas_are_found_by_group_and_label(tmp_path):
    data = _panoramas(tmp_path / "real", labels=["outdoor"])
    assert [p.name for p in find_panoramas(data)] == ["indoor/indoor.hdr", "outdoor/outdoor.hdr"]
    assert [p.name for p in find_panoramas(data, groups=("outdoor", "indoor"))] == [
        "outdoor/outdoor.hdr", "indoor/indoor.hdr"]
    labelled = find_panoramas(data, labelled=True)
    assert [(p.name, p.label.name) for p in labelled] == [("outdoor/outdoor.hdr", "outdoor.png")]
    with pytest.raises(ConfigError, match=r"none: no real panoramas \(expected indoor/\*.hdr "
                                          r"and outdoor/\*.hdr\); pass --data DIR"):
        find_panoramas(tmp_path / "none")
    with pytest.raises(ConfigError, match="no labelled panoramas .* labels/<stem>.png"):
        find_panoramas(data / "indoor", labelled=True)


def test_real_hdri_check_needs_panoramas_before_a_model(tmp_path, capsys):
    assert main(["check", "real-hdri", str(tmp_path / "run"), "--data",
                 str(tmp_path / "none")]) == 2
    assert "pass --data DIR where they are" in capsys.readouterr().err


def test_real_hdri_options_are_checked_when_made(tmp_path, capsys):
    from skyseg.evaluation.check import RealHdriOptions, default_out_dir

    assert RealHdriOptions().indoor_target == 0.03
    with pytest.raises(ConfigError, match="--indoor-target is a share .* got 3.0"):
        RealHdriOptions(indoor_target=3.0)
    assert main(["check", "real-hdri", "RUN", "--data", str(tmp_path),
                 "--indoor-target", "-0.1"]) == 2
    assert "--indoor-target is a share" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert default_out_dir([run]) == run / "real-hdri"
    assert default_out_dir([run / "model_best.h5", run]) == run / "real-hdri-ensemble"


def test_the_check_command_imports_no_tensorflow():
    code = ("import sys, skyseg.evaluation.check, skyseg.cli.commands as c; c.build_parser(); "
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_real_hdri_check_scores_indoor_sky_for_one_run_or_an_ensemble(tmp_path, capsys):
    from .test_predict import make_run

    real = _panoramas(tmp_path / "real")
    sky = make_run(tmp_path / "sky", "constant", mode="hdr", value=0.8)  # sky everywhere
    ground = make_run(tmp_path / "ground", "constant", mode="hdr", value=0.1)
    assert main(["check", "real-hdri", str(sky), "--data", str(real)]) == 1
    out = capsys.readouterr().out
    assert "indoor/indoor.hdr" in out and "100.0%" in out and "ABOVE the target" in out
    assert (sky / "real-hdri" / "indoor_indoor_overlay.png").is_file()
    assert (sky / "real-hdri" / "contact_sheet.png").is_file()
    # A looser target passes the same run.
    assert main(["check", "real-hdri", str(sky), "--data", str(real),
                 "--indoor-target", "1"]) == 0
    assert "indoor mean 100.0%: within the target of 100%" in capsys.readouterr().out
    # Averaged with a run that sees no sky: 0.45 everywhere, so nothing is sky.
    assert main(["check", "real-hdri", str(sky), str(ground), "--data", str(real)]) == 0
    out = capsys.readouterr().out
    assert f"run {sky} + {ground}" in out and "indoor mean 0.0%: within" in out
    assert (sky / "real-hdri-ensemble" / "contact_sheet.png").is_file()
    # An unreadable panorama is listed and gives status 1; the others are still scored.
    (real / "outdoor" / "broken.hdr").write_bytes(BROKEN_HDR)
    assert main(["check", "real-hdri", str(sky), str(ground), "--data", str(real)]) == 1
    captured = capsys.readouterr()
    assert "outdoor/outdoor.hdr" in captured.out and "broken.hdr" in captured.err
    assert main(["check", "real-hdri", str(tmp_path / "none"), "--data", str(real)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    # No indoor panorama read: nothing to hold against the target.
    (real / "indoor" / "indoor.hdr").write_bytes(BROKEN_HDR)
    assert main(["check", "real-hdri", str(sky), "--data", str(real)]) == 2
    assert "no indoor panorama read" in capsys.readouterr().err


@pytest.mark.slow
def test_real_hdri_check_on_the_real_panoramas_with_the_shipped_model(tmp_path, capsys):
    from skyseg.io.run_folder import DEFAULT_MODEL_DIR

    data = shared_path("real-hdri")
    status = main(["check", "real-hdri", str(DEFAULT_MODEL_DIR), "--data", str(data),
                   "--out", str(tmp_path)])
    out = capsys.readouterr().out
    print(out)  # the figures, for the log
    rows = [line for line in out.splitlines() if line.startswith(("indoor/", "outdoor/"))]
    assert len(rows) == 8 and all("1024x512" in row for row in rows)
    # The shipped model learnt from these eight: its indoor false sky is small.
    assert status == 0 and "within the target of 3%" in out
    assert len(list(tmp_path.glob("*_overlay.png"))) == 8
    assert (tmp_path / "contact_sheet.png").is_file()
