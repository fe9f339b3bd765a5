"""Prediction: sky masks for images of any size, 8K panoramas first.

``options`` holds the options of ``skyseg predict`` (and the part ``skyseg evaluate``
shares); ``loading`` loads the model (run folders, model files, ensembles); ``image``
predicts one array (``predict_image``), ``files`` a batch of files (``predict_files``),
``outputs`` writes what each input gives; ``tiling`` merges overlapping tiles, ``refine``
brings a coarse probability to full resolution along the image's edges, ``shards`` splits
a batch over a job array; ``predictor`` is the command line (``skyseg predict``, also
``python -m skyseg.predict``).
"""

from skyseg.predict.files import predict_files
from skyseg.predict.image import predict_image
from skyseg.predict.loading import load_predictor
from skyseg.predict.options import PredictOptions

__all__ = ["predict_image", "predict_files", "load_predictor", "PredictOptions"]
