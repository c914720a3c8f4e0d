"""``cml.data_v1``: CML's data connections (Spark, Hive, Impala) need a CML workspace,
which cdsw-tui is not. Importing works, so code that falls back when a connection
fails (as the AMPs do) goes on; each call raises one line saying so."""

from __future__ import annotations

from typing import Any

NEEDS = (
    "cml.data_v1 needs CML's data connections (Spark, Hive, Impala), which cdsw-tui does "
    "not have; read the data from files in the project instead"
)


class DataConnectionError(RuntimeError):
    pass


def get_connection(*args: Any, **kwargs: Any) -> Any:
    raise DataConnectionError(NEEDS)


def list_connections(*args: Any, **kwargs: Any) -> Any:
    raise DataConnectionError(NEEDS)
