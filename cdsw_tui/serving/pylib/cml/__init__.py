"""``import cml``: the CML packages model code and project scripts use (``models_v1``,
``metrics_v1``), backed by the same implementation as ``cdsw``."""
