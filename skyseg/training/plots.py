"""The run folder's pictures: ``curves.png`` (loss and IoU per epoch) and ``samples.png``.

Example:
    >>> plot_curves(Path("runs/r18/curves.png"), history, best_epoch=7)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curves", "plot_samples"]


def _save_figure(figure, path: Path) -> None:
    from skyseg.io import atomic_output

    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def plot_curves(path: Path, history: list[dict], *, best_epoch: int | None = None) -> None:
    """``curves.png``: loss and IoU per epoch, training vs validation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, key, title in zip(figure.subplots(1, 2), ("loss", "iou"), ("loss", "IoU (sky)"),
                                strict=True):
        axes.plot(epochs, [row[key] for row in history], "o-", label="training", markersize=3)
        axes.plot(epochs, [row[f"val_{key}"] for row in history], "o-", label="validation",
                  markersize=3)
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle=":",
                         label=f"best (epoch {best_epoch})")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    _save_figure(figure, path)


def plot_samples(path: Path, images: np.ndarray, masks: np.ndarray, probabilities: np.ndarray,
                 preprocessing) -> None:
    """``samples.png``: per row a patch (tonemapped if HDR), its true mask, the prediction.

    Args:
        path: the PNG to write.
        images: float32 (N, P, P, 3) network input.
        masks: uint8 (N, P, P, 1) truth (255 = ignore, shown grey).
        probabilities: float32 (N, P, P, 1).
        preprocessing: the dataset's, to show the images as people see them.
    """
    from matplotlib.figure import Figure

    from skyseg.image.metrics import iou_score
    from skyseg.image.preprocess import tonemap

    count = len(images)
    figure = Figure(figsize=(7.5, 2.5 * count), layout="constrained")
    grid = figure.subplots(count, 3, squeeze=False)
    for row, (image, mask, probability) in enumerate(zip(images, masks, probabilities,
                                                         strict=True)):
        values = preprocessing.invert(image)
        display = tonemap(values, is_hdr=preprocessing.is_hdr)
        truth = mask[:, :, 0].astype(np.float32)
        truth[mask[:, :, 0] == 255] = 0.5
        score = iou_score(mask[:, :, 0], probability[:, :, 0])
        panels = ((display, "image", None), (truth, "true sky (grey: ignored)", "gray"),
                  (probability[:, :, 0], f"predicted sky (IoU {score:.3f})", "gray"))
        for column, (panel, title, cmap) in enumerate(panels):
            axes = grid[row, column]
            axes.imshow(panel, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None,
                        interpolation="nearest")
            axes.set_axis_off()
            if row == 0 or column == 2:
                axes.set_title(title, fontsize=9)
    _save_figure(figure, path)
