"""Labels: from Label Studio to masks and back.

``annotations`` loads COCO exports and matches them to images on disk; ``labelstudio`` turns
masks into Label Studio tasks and back; ``masks`` and ``previews`` are the ``skyseg masks`` and
``skyseg previews`` stages; ``sky_gaps`` finds sky seen through bare branches.
"""

__all__ = []
