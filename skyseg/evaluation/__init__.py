"""Evaluation: how good the masks are against labels.

``evaluate`` is ``skyseg evaluate`` (per-image and pooled IoU/Dice, boundary F, worst cases);
``check`` is ``skyseg check`` (``real-hdri``: a run's sky on real panoramas, false sky indoors;
``labels``: where a COCO export's label convention for sky between branches differs).
"""

__all__ = []
