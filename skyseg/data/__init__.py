"""Training data: patches, splits and batches.

``dataset`` is ``skyseg build-dataset`` (images + COCO -> a patch dataset on disk), built from
``patches`` (extraction), ``splits`` (train/val by source image) and ``shards`` (job arrays);
``generators`` and ``augmentation`` feed training with seeded Keras sequences.
"""

__all__ = []
