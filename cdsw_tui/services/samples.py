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


def sample(lang: str, url: str, access_key: str, example_input: str) -> str:
    request = _request_json(example_input)
    body = '{"accessKey":"' + access_key + '","request":' + request + "}"
    if lang == "shell":
        return (
            f'curl -H "Content-Type: application/json" -X POST {url}/model \\\n'
            f"     -d {shlex.quote(body)}"
        )
    if lang == "python":
        return (
            "# needs requests: pip install requests\n"
            "import requests\n\n"
            f"r = requests.post({url + '/model'!r},\n"
            f"                  data={body!r},\n"
            '                  headers={"Content-Type": "application/json"})\n'
            "print(r.json())"
        )
    if lang == "r":
        escaped = body.replace("\\", "\\\\").replace('"', '\\"')
        return (
            '# needs httr: install.packages("httr")\n'
            "library(httr)\n\n"
            f'r <- POST("{url}/model",\n'
            f'          body = "{escaped}",\n'
            '          add_headers("Content-Type" = "application/json"))\n'
            "str(content(r))"
        )
    raise ValueError(f"unknown language {lang!r}")
