from pathlib import Path

import pytest

from cdsw_tui.config import load_settings
from cdsw_tui.errors import CdswError


def test_defaults_then_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("GATEWAY_PORT", "BUSY_TIMEOUT", "RUNTIME"):
        monkeypatch.delenv(f"CDSW_TUI_{name}", raising=False)
    s = load_settings(tmp_path)
    assert (s.gateway_host, s.gateway_port, s.busy_timeout, s.request_timeout) == (
        "127.0.0.1",
        8787,
        30.0,
        30.0,
    )
    assert s.max_request_bytes == 5 * 1024 * 1024 and s.runtime == "local"
    (tmp_path / "config.toml").write_text(
        'gateway_port = 9000\nbusy_timeout = 5\nruntime = "docker"\n'
    )
    s = load_settings(tmp_path)
    assert (s.gateway_port, s.busy_timeout, s.runtime) == (9000, 5.0, "docker")
    monkeypatch.setenv("CDSW_TUI_GATEWAY_PORT", "9100")
    assert load_settings(tmp_path).gateway_port == 9100


def test_bad_values_give_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CDSW_TUI_GATEWAY_PORT", "eighty")
    with pytest.raises(CdswError, match="GATEWAY_PORT"):
        load_settings(tmp_path)
    monkeypatch.delenv("CDSW_TUI_GATEWAY_PORT")
    (tmp_path / "config.toml").write_text("this is = = not toml")
    with pytest.raises(CdswError, match="config.toml"):
        load_settings(tmp_path)


def test_ca_bundle_detected_from_pip_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    monkeypatch.delenv("CDSW_TUI_CA_BUNDLE", raising=False)
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert load_settings(tmp_path).ca_bundle == str(bundle)
