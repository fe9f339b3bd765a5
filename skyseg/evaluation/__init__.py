"""Evaluation: how good the masks are against labels.

``evaluate`` is ``skyseg evaluate`` (per-image and pooled IoU/Dice, boundary F, worst cases).
"""

__all__ = []
