"""The sample calls shown for every model: Shell (curl), Python (requests), R (httr)."""

from __future__ import annotations

import json
import shlex

LANGS = ("shell", "python", "r")


def _request_json(example_input: str) -> str:
    try:
        return json.dumps(json.loads(example_input)) if example_input.strip() else "{}"
    except ValueError:
        return "{}"


def sample(lang: str, url: str, access_key: str, example_input: str, ca: str = "") -> str:
    """A call of the model at ``url``; ``ca``: the file an HTTPS gateway's certificate is
    verified with (its own, when self-signed), named in the sample."""
    request = _request_json(example_input)
    body = '{"accessKey":"' + access_key + '","request":' + request + "}"
    if lang == "shell":
        cacert = f"--cacert {shlex.quote(ca)} " if ca else ""
        return (
            f'curl {cacert}-H "Content-Type: application/json" -X POST {url}/model \\\n'
            f"     -d {shlex.quote(body)}"
        )
    if lang == "python":
        verify = f"                  verify={ca!r},\n" if ca else ""
        return (
            "# needs requests: pip install requests\n"
            "import requests\n\n"
            f"r = requests.post({url + '/model'!r},\n"
            f"                  data={body!r},\n"
            f"{verify}"
            '                  headers={"Content-Type": "application/json"})\n'
            "print(r.json())"
        )
    if lang == "r":
        escaped = body.replace("\\", "\\\\").replace('"', '\\"')
        cainfo = f'          config(cainfo = "{ca}"),\n' if ca else ""
        return (
            '# needs httr: install.packages("httr")\n'
            "library(httr)\n\n"
            f'r <- POST("{url}/model",\n'
            f'          body = "{escaped}",\n'
            f"{cainfo}"
            '          add_headers("Content-Type" = "application/json"))\n'
            "str(content(r))"
        )
    raise ValueError(f"unknown language {lang!r}")
