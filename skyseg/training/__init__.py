"""Models and their training.

``model`` (the model factory, saving and loading, run folders as models, ensembles), ``lite0``
(the EfficientNet-Lite0 U-Net), ``recipe`` (optimizer, schedule, weight averaging), ``train``
(``skyseg train``), ``tracking`` (MLflow) and ``distribute`` (several machines).
"""

__all__ = []
