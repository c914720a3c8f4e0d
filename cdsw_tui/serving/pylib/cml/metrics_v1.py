"""``import cml.metrics_v1 as metrics``: CML's model metrics functions, the same as
``cdsw``'s (https://docs.cloudera.com/machine-learning/cloud/models/topics/ml-tracking-model-metrics-using-python.html)."""

import cdsw

__all__ = ["read_metrics", "track_aggregate_metrics", "track_delayed_metrics", "track_metric"]

track_metric = cdsw.track_metric
read_metrics = cdsw.read_metrics
track_delayed_metrics = cdsw.track_delayed_metrics
track_aggregate_metrics = cdsw.track_aggregate_metrics
