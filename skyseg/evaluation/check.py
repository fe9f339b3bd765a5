"""Checks with no score to beat: a model on unlabelled real panoramas, a labelled set's convention.

``skyseg check real-hdri RUN [RUN ...] --data DIR [--out DIR]`` predicts every
``DIR/{indoor,outdoor}/*.hdr`` panorama (for instance the eight real 1024x512
Poly Haven panoramas of ``real-hdri``) with skyseg's predict API at its default
settings and prints per panorama the share of pixels called sky. An indoor
panorama has (almost) no sky, so its share is a false-positive rate: the mean
over the indoor panoramas is the figure to keep small (``--indoor-target``,
default 3 %). The outdoor ones are for the eye: the overlays (sky tinted
magenta) go to ``--out`` (default ``RUN/real-hdri``, for several runs the
first's ``real-hdri-ensemble``), all of them on ``contact_sheet.png``. Several
runs are an ensemble: their sky probabilities are averaged, as
``skyseg predict RUN --ensemble RUN2`` does.

``skyseg check labels --coco FILE --images DIR [--group-chars 6]`` shows how
each group of a labelled set (the first ``--group-chars`` characters of the
image name: CamVid's sequence) treats sky seen through trees. It counts the
pixels labelled *not sky* next to labelled sky that have that sky's brightness
(the rule of :func:`skyseg.labels.sky_gaps.sky_coloured_not_sky`): mostly sky
between the branches of bare trees, which one labeller calls tree and another
sky. Per group it prints that count per labelled sky pixel; groups that differ
by several points label the same thing differently, and a model trained on one
scores the other lower the longer it trains.

Exit status: 0; 1 when a panorama or image could not be read (the others are
still checked, the failures listed at the end) or, for ``real-hdri``, when the
indoor mean is above the target; 2 when the data or a run cannot be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, SkysegError
from skyseg.image.overlay import contact_sheet, resize_uint8, tint
from skyseg.io import read_image, write_png
from skyseg.labels.annotations import CategoryOptions, load_coco, match_images
from skyseg.labels.sky_gaps import sky_coloured_not_sky
from skyseg.log import BatchReport
from skyseg.options import add_options, from_args, option

__all__ = [
    "CLI_HELP",
    "add_arguments",
    "run",
    "GROUPS",
    "Panorama",
    "PanoramaSky",
    "find_panoramas",
    "predict_panoramas",
    "RealHdriOptions",
    "RealHdriCheck",
    "default_out_dir",
    "check_real_hdri",
    "LabelsOptions",
    "LabelGroup",
    "count_sky_coloured_not_sky",
    "check_labels",
]

CLI_HELP = "check a model on unlabelled real panoramas, or a labelled set's sky convention"

#: The sub-folders of a real-panorama folder, in the order they are checked.
GROUPS = ("indoor", "outdoor")
#: Long side of a panorama on the contact sheet.
THUMBNAIL_SIZE = 512
#: Images with fewer labelled sky pixels say nothing about a convention: left out.
MIN_SKY_PIXELS = 100


# --------------------------------------------------------------------------- panoramas

@dataclass(frozen=True)
class Panorama:
    """One real panorama: its group (``indoor``/``outdoor``), file and label (or None)."""

    group: str
    path: Path
    label: Path | None = None

    @property
    def name(self) -> str:
        """``group/file name``, as the tables show it."""
        return f"{self.group}/{self.path.name}"


@dataclass
class PanoramaSky:
    """What a model called sky on one panorama.

    Attributes:
        panorama: the panorama.
        sky: bool (H, W), True where the model says sky.
        seconds: read, prediction and overlay of this panorama.
    """

    panorama: Panorama
    sky: np.ndarray
    seconds: float

    @property
    def size(self) -> str:
        """``WIDTHxHEIGHT`` of the panorama."""
        return f"{self.sky.shape[1]}x{self.sky.shape[0]}"

    @property
    def share(self) -> float:
        """Share (0..1) of the pixels called sky."""
        return float(self.sky.mean())


def find_panoramas(data: str | Path, *, groups: tuple[str, ...] = GROUPS,
                   labelled: bool = False) -> list[Panorama]:
    """The ``DATA/<group>/*.hdr`` panoramas, group by group, sorted by name.

    Args:
        data: a real-panorama folder (``indoor/``, ``outdoor/`` and for labels ``labels/``).
        groups: the sub-folders to look in, in this order.
        labelled: keep only the panoramas with a ``DATA/labels/<stem>.png`` label
            (0 not sky, 1 sky, 255 ignore), and set :attr:`Panorama.label`.

    Raises:
        ConfigError: no (labelled) panorama there, naming the folder and what was expected.

    Example:
        >>> find_panoramas("../shared/data/real-hdri")[0].name  # doctest: +SKIP
        'indoor/apartment.hdr'
    """
    data = Path(data)
    found = []
    for group in groups:
        for path in sorted((data / group).glob("*.hdr")):
            label = data / "labels" / f"{path.stem}.png"
            if not labelled:
                found.append(Panorama(group, path))
            elif label.is_file():
                found.append(Panorama(group, path, label))
    if not found:
        expected = " and ".join(f"{group}/*.hdr" for group in groups)
        what = "labelled panoramas" if labelled else "real panoramas"
        extra = " with labels/<stem>.png" if labelled else ""
        raise ConfigError(f"{data}: no {what} (expected {expected}{extra}); pass --data DIR "
                          "where they are")
    return found


def predict_panoramas(model, panoramas: list[Panorama], out_dir: str | Path, *,
                      report: BatchReport | None = None) -> Iterator[PanoramaSky]:
    """Predict each panorama; write its overlay, and all of them on one contact sheet.

    Writes ``OUT/<group>_<stem>_overlay.png`` (sky tinted magenta, full size) per
    panorama and, once the last is done, ``OUT/contact_sheet.png`` (all overlays,
    two a row, 512 px wide each). Predictions use skyseg's defaults.

    Args:
        model: what :func:`skyseg.predict.loading.load_predictor` loaded (or accepts).
        panoramas: from :func:`find_panoramas`.
        out_dir: the overlays' folder (made if missing).
        report: collects the panoramas that cannot be read, and the others go on;
            without one, the first such error is raised.

    Yields:
        a :class:`PanoramaSky` per panorama read, in order.

    Raises:
        ImageReadError: a panorama cannot be read and there is no ``report``.
    """
    from skyseg.predict.image import predict_image
    from skyseg.predict.loading import load_predictor
    from skyseg.predict.outputs import overlay_background, probability_to_mask

    loaded = load_predictor(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbnails = []
    for panorama in panoramas:
        start = time.perf_counter()
        try:
            image, info = read_image(panorama.path, return_info=True)
        except SkysegError as exc:
            if report is None:
                raise
            report.failed(panorama.path, exc)
            continue
        probability = predict_image(loaded, image, is_hdr=info.is_hdr, name=panorama.path.name)
        sky = probability_to_mask(probability, value=1).astype(bool)
        background = overlay_background(image, is_hdr=info.is_hdr, max_size=None)
        overlay = tint(background, sky)
        write_png(out_dir / f"{panorama.group}_{panorama.path.stem}_overlay.png", overlay)
        thumbnails.append(resize_uint8(overlay, THUMBNAIL_SIZE))
        if report is not None:
            report.succeeded(panorama.path)
        yield PanoramaSky(panorama, sky, time.perf_counter() - start)
    if thumbnails:  # every overlay on one page, to look at them together
        write_png(out_dir / "contact_sheet.png", contact_sheet(thumbnails))


# --------------------------------------------------------------------------- real-hdri

@dataclass
class RealHdriOptions:
    """The settings of ``skyseg check real-hdri``."""

    indoor_target: float = option(
        0.03, "largest mean share (0..1) of sky on the indoor panoramas that passes")

    def __post_init__(self):
        if not 0.0 <= self.indoor_target <= 1.0:
            raise ConfigError(f"--indoor-target is a share of the pixels, 0 to 1 (0.03: 3 %), "
                              f"got {self.indoor_target}")


@dataclass
class RealHdriCheck:
    """The outcome of :func:`check_real_hdri`.

    Attributes:
        results: one :class:`PanoramaSky` per panorama read.
        report: the panoramas that could not be read.
        out_dir: the overlays' folder.
        indoor_target: the largest indoor mean share that passes.
    """

    results: list[PanoramaSky]
    report: BatchReport
    out_dir: Path
    indoor_target: float

    def mean_share(self, group: str) -> float | None:
        """Mean sky share over the group's panoramas; None when none was read."""
        shares = [result.share for result in self.results if result.panorama.group == group]
        return sum(shares) / len(shares) if shares else None

    @property
    def passed(self) -> bool:
        """Indoor mean within the target (False when no indoor panorama was read)."""
        indoor = self.mean_share("indoor")
        return indoor is not None and indoor <= self.indoor_target

    @property
    def exit_code(self) -> int:
        """0 when within the target and every panorama was read, else 1."""
        return 0 if self.passed and not self.report.failures else 1


def default_out_dir(runs: list[Path]) -> Path:
    """``RUN/real-hdri`` (a model file: beside it), ``real-hdri-ensemble`` for several runs."""
    first = Path(runs[0])
    return (first if first.is_dir() else first.parent) / (
        "real-hdri" if len(runs) == 1 else "real-hdri-ensemble")


def check_real_hdri(runs, data: str | Path, out_dir: str | Path | None = None,
                    options: RealHdriOptions | None = None, *,
                    show: Callable[[str], None] | None = None, **overrides) -> RealHdriCheck:
    """The share of sky a run (or an ensemble) sees on each real panorama.

    Args:
        runs: a run folder or model file, or a list of them (an ensemble).
        data: the real-panorama folder (``indoor/*.hdr``, ``outdoor/*.hdr``).
        out_dir: the overlays' folder (default :func:`default_out_dir`).
        options: a :class:`RealHdriOptions`; ``overrides`` change its fields.
        show: called with each line of the table as it comes (e.g. ``print``).

    Raises:
        ConfigError: no panoramas in ``data``; an option out of range.
        ModelError: a run cannot be loaded.
        TypeError: an unknown keyword in ``overrides``.

    Example:
        >>> check = check_real_hdri("outputs/demo/run", "real-hdri")  # doctest: +SKIP
        >>> f"{check.mean_share('indoor'):.1%}"  # doctest: +SKIP
        '1.8%'
    """
    from skyseg.predict.loading import load_predictor

    options = dataclasses.replace(options or RealHdriOptions(), **overrides)
    runs = [Path(run) for run in ([runs] if isinstance(runs, (str, Path)) else runs)]
    show = show or (lambda line: None)
    panoramas = find_panoramas(data)
    loaded = load_predictor(runs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs)
    report = BatchReport("check real-hdri")
    show(f"run {' + '.join(str(run) for run in runs)}, data {data}")
    show(f"{'panorama':<22} {'size':>10} {'sky share':>10} {'seconds':>8}")
    results = []
    for result in predict_panoramas(loaded, panoramas, out, report=report):
        results.append(result)
        show(f"{result.panorama.name:<22} {result.size:>10} {result.share:>9.1%} "
             f"{result.seconds:>8.1f}")
    return RealHdriCheck(results, report, out, options.indoor_target)


def _report_real_hdri(check: RealHdriCheck, data) -> int:
    for group in GROUPS:
        mean = check.mean_share(group)
        if mean is not None:
            count = sum(result.panorama.group == group for result in check.results)
            print(f"mean sky share, {group}: {mean:.1%} over {count} panoramas")
    print(f"overlays in {check.out_dir} (all of them: contact_sheet.png)")
    check.report.log_summary()
    indoor = check.mean_share("indoor")
    if indoor is None:
        raise ConfigError(f"{data}: no indoor panorama read: nothing to hold against the "
                          "target; put indoor/*.hdr files there")
    verdict = "within" if check.passed else "ABOVE"
    print(f"indoor mean {indoor:.1%}: {verdict} the target of {check.indoor_target:.0%}")
    return check.exit_code


def _run_real_hdri(args: argparse.Namespace) -> int:
    check = check_real_hdri(args.runs, args.data, args.out, from_args(RealHdriOptions, args),
                            show=lambda line: print(line, flush=True))
    return _report_real_hdri(check, args.data)


# --------------------------------------------------------------------------- labels

@dataclass
class LabelsOptions(CategoryOptions):
    """The settings of ``skyseg check labels`` (and the COCO categories)."""

    group_chars: int = option(
        6, "characters of the image name that name its group (CamVid: the sequence)")


@dataclass
class LabelGroup:
    """Sky-coloured not-sky pixels next to sky in one group of images.

    Attributes:
        name: the group (the first characters of the image names).
        images: images counted.
        alike: labelled not sky, next to sky and with its brightness.
        sky: labelled sky.
    """

    name: str
    images: int = 0
    alike: int = 0
    sky: int = 0

    @property
    def ratio(self) -> float:
        """``alike`` per labelled sky pixel."""
        return self.alike / self.sky if self.sky else 0.0


def count_sky_coloured_not_sky(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """``(not-sky pixels next to sky with its brightness, sky pixels)`` of one image.

    Args:
        image: float32 (H, W, 3), any range (LDR or linear HDR).
        mask: uint8 (H, W), 1 = sky, 0 = not sky.

    The rule is :func:`skyseg.labels.sky_gaps.sky_coloured_not_sky`, which
    ``skyseg build-dataset --ignore-sky-gaps`` narrows to gaps and leaves out of training.

    Example:
        >>> count_sky_coloured_not_sky(np.ones((8, 8, 3), np.float32),
        ...                            np.zeros((8, 8), np.uint8))
        (0, 0)
    """
    return int(sky_coloured_not_sky(image, mask).sum()), int((mask == 1).sum())


def check_labels(coco: str | Path, images: str | Path, options: LabelsOptions | None = None,
                 *, report: BatchReport | None = None, **overrides) -> list[LabelGroup]:
    """Per group of images, the sky-coloured not-sky pixels next to sky per sky pixel.

    Args:
        coco: a Label Studio COCO export (``result.json``).
        images: the folder of the labelled images (found by stem).
        options: a :class:`LabelsOptions`; ``overrides`` change its fields.
        report: collects the images that are missing or cannot be read, and the
            others go on; without one, the first such error is raised.

    Returns:
        the groups, sorted by name (images with under 100 sky pixels left out).

    Raises:
        AnnotationError: the export cannot be read; ConfigError: ``images`` is no folder.

    Example:
        >>> groups = check_labels("camvid-sky/result.json", "camvid-sky/images")  # doctest: +SKIP
        >>> [(g.name, round(g.ratio, 3)) for g in groups]  # doctest: +SKIP
        [('0001TP', 0.037), ('0006R0', 0.129), ('0016E5', 0.094)]
    """
    options = dataclasses.replace(options or LabelsOptions(), **overrides)
    if options.group_chars < 1:
        raise ConfigError(f"--group-chars must be at least 1, got {options.group_chars}")
    labels = load_coco(coco, sky_categories=options.sky_categories,
                       non_sky_categories=options.non_sky_categories)
    matched, missing = match_images(labels, images)
    for stem in missing:
        _fail(report, stem, ConfigError(f"{stem}: labelled in {coco} but no image of that "
                                        f"name in {images}; check --images"))
    groups: dict[str, LabelGroup] = {}
    for path, stem in matched:
        try:
            image = read_image(path)
            mask = labels.mask(stem, image.shape[0], image.shape[1])
        except SkysegError as exc:
            _fail(report, path, exc)
            continue
        alike, sky = count_sky_coloured_not_sky(image, mask)
        if report is not None:
            report.succeeded(path)
        if sky < MIN_SKY_PIXELS:
            continue
        name = stem[:options.group_chars]
        group = groups.setdefault(name, LabelGroup(name))
        group.images += 1
        group.alike += alike
        group.sky += sky
    return [groups[name] for name in sorted(groups)]


def _fail(report: BatchReport | None, item, error: SkysegError) -> None:
    if report is None:
        raise error
    report.failed(item, error)


def _run_labels(args: argparse.Namespace) -> int:
    report = BatchReport("check labels")
    groups = check_labels(args.coco, args.images, from_args(LabelsOptions, args), report=report)
    print("group    images  sky-coloured not-sky pixels next to sky, per labelled sky pixel")
    for group in groups:
        print(f"{group.name:<8} {group.images:>6}  {group.ratio:.4f}")
    report.log_summary()
    return report.exit_code


# --------------------------------------------------------------------------- command line

def _add_real_hdri_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="run folder (or model file) to predict with; several: their "
                             "probabilities averaged")
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with indoor/ and outdoor/ .hdr files (e.g. "
                             "../shared/data/real-hdri)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for <group>_<name>_overlay.png (default: RUN/real-hdri, "
                             "for several runs the first's real-hdri-ensemble)")
    add_options(parser, RealHdriOptions)


def _add_labels_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco", type=Path, required=True,
                        help="Label Studio COCO export (result.json)")
    parser.add_argument("--images", type=Path, required=True,
                        help="folder of the labelled images, found by stem")
    add_options(parser, LabelsOptions)


#: Sub-command -> (one line of help, its arguments, what it runs).
_CHECKS = {
    "real-hdri": ("the share of sky a run sees on real panoramas (indoor: false sky)",
                  _add_real_hdri_arguments, _run_real_hdri),
    "labels": ("how each group of a labelled set labels sky seen through trees",
               _add_labels_arguments, _run_labels),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    checks = parser.add_subparsers(dest="check", metavar="CHECK", title="checks", required=True)
    for name, (help_text, add, _) in _CHECKS.items():
        sub = checks.add_parser(name, help=help_text, description=help_text,
                                formatter_class=parser.formatter_class)
        add(sub)


def run(args: argparse.Namespace) -> int:
    return _CHECKS[args.check][2](args)
