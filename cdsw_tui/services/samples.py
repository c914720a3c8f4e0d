"""The sample calls shown for every model: Shell (curl), Python (requests), R (httr)."""

from __future__ import annotations

import json
import shlex

from cdsw_tui.config import Settings
from cdsw_tui.store import Model

LANGS = ("shell", "python", "r")
API_KEY_VARIABLE = "CDSW_TUI_API_KEY"
_NEEDS_KEY = (
    "this model needs an API key (its authentication is on): make one with "
    f"`cdsw-tui apikey create NAME`, then export {API_KEY_VARIABLE}=<the key>"
)


def of_model(lang: str, settings: Settings, model: Model, shown_key: str) -> str:
    """The sample of ``model`` on this gateway, its access key shown as ``shown_key``."""
    return sample(
        lang,
        settings.gateway_url,
        shown_key,
        model.example_input,
        settings.tls_trust,
        api_key=model.auth_enabled or settings.require_api_keys,
    )


def _request_json(example_input: str) -> str:
    try:
        return json.dumps(json.loads(example_input)) if example_input.strip() else "{}"
    except ValueError:
        return "{}"


def sample(
    lang: str, url: str, access_key: str, example_input: str, ca: str = "", api_key: bool = False
) -> str:
    """A call of the model at ``url``; ``ca``: the file an HTTPS gateway's certificate is
    verified with (its own, when self-signed), named in the sample; ``api_key``: the model
    needs one, sent from $CDSW_TUI_API_KEY (never the key itself: only its hash is kept)."""
    request = _request_json(example_input)
    body = '{"accessKey":"' + access_key + '","request":' + request + "}"
    if lang == "shell":
        cacert = f"--cacert {shlex.quote(ca)} " if ca else ""
        note = f"# {_NEEDS_KEY}\n" if api_key else ""
        bearer = f'-H "Authorization: Bearer ${API_KEY_VARIABLE}" ' if api_key else ""
        return (
            f"{note}"
            f'curl {cacert}-H "Content-Type: application/json" {bearer}-X POST {url}/model \\\n'
            f"     -d {shlex.quote(body)}"
        )
    if lang == "python":
        verify = f"                  verify={ca!r},\n" if ca else ""
        headers = '{"Content-Type": "application/json"}'
        if api_key:
            headers = (
                '{"Content-Type": "application/json",\n'
                f'                           "Authorization": "Bearer " + os.environ[{API_KEY_VARIABLE!r}]}}'
            )
        return (
            "# needs requests: pip install requests\n"
            + (f"# {_NEEDS_KEY}\nimport os\n" if api_key else "")
            + "import requests\n\n"
            f"r = requests.post({url + '/model'!r},\n"
            f"                  data={body!r},\n"
            f"{verify}"
            f"                  headers={headers})\n"
            "print(r.json())"
        )
    if lang == "r":
        escaped = body.replace("\\", "\\\\").replace('"', '\\"')
        cainfo = f'          config(cainfo = "{ca}"),\n' if ca else ""
        bearer = (
            f',\n                      "Authorization" = paste("Bearer", Sys.getenv("{API_KEY_VARIABLE}"))'
            if api_key
            else ""
        )
        return (
            '# needs httr: install.packages("httr")\n'
            + (f"# {_NEEDS_KEY}\n" if api_key else "")
            + "library(httr)\n\n"
            f'r <- POST("{url}/model",\n'
            f'          body = "{escaped}",\n'
            f"{cainfo}"
            f'          add_headers("Content-Type" = "application/json"{bearer}))\n'
            "str(content(r))"
        )
    raise ValueError(f"unknown language {lang!r}")
