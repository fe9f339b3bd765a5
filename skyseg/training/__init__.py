"""Models and their training.

``model`` (the model factory, saving and loading, run folders as models, ensembles), ``lite0``
(the EfficientNet-Lite0 U-Net), ``recipe`` (optimizer, schedule, weight averaging),
``options`` (``TrainOptions``: ``skyseg train``'s options), ``settings`` (``RunSettings``:
a run's ``config.json``), ``train`` (``skyseg train``), ``recorder`` (what a run keeps after
each epoch; the time budget), ``plots`` (curves and samples), ``finetune`` (``--init``),
``tracking`` (MLflow) and ``distribute`` (several machines).
"""

__all__ = []
