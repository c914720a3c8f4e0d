"""``import cml.models_v1 as models``: CML's model decorator, as documented in
https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-models-examples.html
(``@models.cml_model``) and, with ``metrics=True``, in
https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-tracking-model-metrics-using-python.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cdsw

__all__ = ["call_model", "cml_model"]

call_model = cdsw.call_model


def cml_model(func: Callable[[Any], Any] | None = None, metrics: bool = False) -> Any:
    """``@cml_model``: the function serves as it is. ``@cml_model(metrics=True)``: each
    call gets a uuid, returned with the prediction, and what it tracks with
    ``metrics_v1.track_metric`` is stored under that uuid."""

    def decorate(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return cdsw.model_metrics(fn) if metrics else fn

    return decorate(func) if callable(func) else decorate
