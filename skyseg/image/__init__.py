"""Arrays in, arrays out: the image operations every stage shares.

No files and no models: ``preprocess`` (linear radiance <-> the network's input: log
transform and its inverse, tonemapping, rescaling, the Rec.709 ``luminance``), ``metrics``
(the mask conventions ``IGNORE`` and ``THRESHOLD``, IoU/Dice/confusion counts, the losses and
their thin Keras wrappers) and ``overlay`` (tinting, error overlays, resizing, contact
sheets). Images are ``float32 (H, W, 3)``, masks ``uint8 (H, W)`` in {0, 1} (255 = ignore
where a function says so).
"""

__all__ = []
