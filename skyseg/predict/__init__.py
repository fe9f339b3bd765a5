"""Prediction: sky masks for images of any size, 8K panoramas first.

``predictor`` is ``skyseg predict`` (and ``python -m skyseg.predict``): ``predict_image`` for one
array, ``predict_files`` for a batch of files; ``tiling`` merges overlapping tiles, ``refine``
brings a coarse probability to full resolution along the image's edges, ``shards`` splits a
batch over a job array.
"""

from skyseg.predict.predictor import load_predictor, predict_files, predict_image

__all__ = ['predict_image', 'predict_files', 'load_predictor']
