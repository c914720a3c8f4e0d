"""The cdsw/cml modules' own logic (no replica, no gateway), the editable-install
detection of local builds, and the metrics service's CRNs and tokens."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from cdsw_tui.config import load_settings
from cdsw_tui.engine.backends.local.environment import installs_editable
from cdsw_tui.errors import CdswError
from cdsw_tui.resources import PYLIB
from cdsw_tui.services import metrics
from cdsw_tui.services.context import Workbench


@pytest.fixture
def cml(monkeypatch):
    monkeypatch.syspath_prepend(str(PYLIB))
    for name in ("cdsw", "cml", "cml.models_v1", "cml.metrics_v1"):
        sys.modules.pop(name, None)
    cdsw = importlib.import_module("cdsw")
    models = importlib.import_module("cml.models_v1")
    metrics_v1 = importlib.import_module("cml.metrics_v1")
    yield cdsw, models, metrics_v1
    for name in ("cdsw", "cml", "cml.models_v1", "cml.metrics_v1"):
        sys.modules.pop(name, None)


def test_cml_model_bare_and_with_metrics(cml):
    cdsw, models, metrics_v1 = cml

    def add(args):
        return args["a"] + args["b"]

    assert models.cml_model(add) is add  # bare: the function itself
    assert models.cml_model()(add) is add

    @models.cml_model(metrics=True)
    def scored(args):
        metrics_v1.track_metric("seen", args["a"])
        return args["a"] * 2

    answer = scored({"a": 4})
    assert answer["prediction"] == 8 and len(answer["uuid"]) == 36
    [record] = metrics_v1.read_metrics(dev=True)["metrics"]  # no replica: kept in memory
    assert (record["predictionUuid"], record["metrics"]) == (answer["uuid"], {"seen": 4})
    assert record["endTimeStampMs"] >= record["startTimeStampMs"]
    metrics_v1.track_delayed_metrics({"truth": 8}, answer["uuid"], dev=True)
    metrics_v1.track_aggregate_metrics({"acc": 1.0}, 0, 10, dev=True)
    found = metrics_v1.read_metrics(dev=True)["metrics"]
    assert [r["metrics"] for r in found] == [{"seen": 4, "truth": 8}, {"acc": 1.0}]
    assert metrics_v1.read_metrics(dev=True, start_timestamp_ms=11)["metrics"] == [found[0]]
    with pytest.raises(cdsw.MetricsError, match="no prediction"):
        cdsw.track_delayed_metrics({"x": 1}, "not-a-uuid", dev=True)


def test_a_runner_sink_takes_the_call_record(cml):
    cdsw, models, metrics_v1 = cml
    got: list[dict] = []
    cdsw._sink = got.append
    scored = models.cml_model(metrics=True)(lambda args: metrics_v1.track_metric("k", 1) or 2)
    scored({})
    metrics_v1.track_metric("alone", 3)  # outside a call: a record of its own
    assert [r["metrics"] for r in got] == [{"k": 1}, {"alone": 3}]
    assert got[0]["predictionUuid"] and got[1]["predictionUuid"] is None


def test_no_service_is_one_clear_error(cml, monkeypatch, tmp_path: Path):
    cdsw, _, _ = cml
    monkeypatch.delenv("CDSW_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("CDSW_TUI_HOME", str(tmp_path / "nohome"))
    with pytest.raises(cdsw.MetricsError, match="no metrics token"):
        cdsw.read_metrics(model_crn="1")
    monkeypatch.setenv("CDSW_METRICS_TOKEN", "1:abc")
    monkeypatch.setenv("CDSW_API_URL", "http://127.0.0.1:9/api/v1")  # nothing listens
    with pytest.raises(cdsw.MetricsError, match="cannot be reached"):
        cdsw.read_metrics(model_crn="1")


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"requirements.txt": "-e .\n"}, True),
        ({"requirements.txt": "numpy\n--editable=./lib\n"}, True),
        ({"requirements.txt": "-e git+https://example.org/x.git#egg=x\n"}, False),
        ({"requirements.txt": "numpy==1.26\n# -e . is not used\n"}, False),
        ({"cdsw-build.sh": "pip3 install -e .\n"}, True),
        ({"cdsw-build.sh": "pip3 install -r requirements.txt\n"}, False),
        ({"setup.py": "-e .\n"}, False),  # not a requirements file
    ],
)
def test_editable_installs_are_found(tmp_path: Path, files: dict, expected: bool):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert installs_editable(tmp_path, dict.fromkeys(files, "blob")) is expected


def test_crns_and_tokens(tmp_path: Path):
    wb = Workbench(load_settings(tmp_path / "home"))
    try:
        assert metrics._id("crn:cdsw-tui:deployment/12", "deployment") == 12
        assert metrics._id("7", "model") == 7 and metrics._id(None, "model") is None
        with pytest.raises(CdswError, match="not a model CRN"):
            metrics._id("crn:cdp:ml:us-west-1:abc/def", "model")
        with pytest.raises(CdswError, match="a build CRN, not a model CRN"):
            metrics._id("crn:cdsw-tui:build/3", "model")
        one = metrics.token(wb, 1)
        assert metrics.token_scope(wb, one) == "1"
        assert metrics.token_scope(wb, metrics.token(wb, metrics.HOME_SCOPE)) == "*"
        for forged in ("", "1:" + "0" * 64, "2" + one[1:], "*" + one[1:]):
            with pytest.raises(metrics.Unauthorized):
                metrics.token_scope(wb, forged)
    finally:
        wb.close()
