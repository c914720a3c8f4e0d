"""The metrics service of the cdsw/cml API on the gateway's port:
``POST /api/v1/metrics/{read,delayed,aggregate}`` with ``Authorization: Bearer <token>``.
The work (token, scope, store) is services/metrics.py's, in a thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.services import metrics
from cdsw_tui.services.context import Workbench
from cdsw_tui.serving.gateway import BodyTooLarge, error_response, read_limited

PATH = "/api/v1/metrics/{action}"
MAX_BODY = 1 << 20
PENDING_WAIT = 5.0  # seconds a delayed metric waits for its call's record to be filed
PENDING_POLL = 0.02

Db = Callable[..., Awaitable]


def routes(wb: Workbench, db: Db) -> list[tuple[str, str, Callable]]:
    async def handle(request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        try:
            payload = json.loads(await read_limited(request, MAX_BODY))
        except BodyTooLarge:
            return error_response(413, "request.too_large", "a metrics call is at most 1 MB")
        except (ValueError, UnicodeDecodeError):
            return error_response(400, "request.invalid", "the body is not JSON")
        except RecursionError:
            return error_response(400, "request.invalid", "the body is nested too deeply")
        action = request.match_info["action"]
        deadline = asyncio.get_running_loop().time() + PENDING_WAIT
        while True:
            try:
                answer = await db(metrics.api, wb, action, bearer, payload)
            except metrics.Unauthorized as exc:
                return error_response(401, "auth.invalid_key", exc.message)
            except NotFound as exc:
                # a call's record reaches the store a little after its answer left (the
                # replica's output is filed every tenth of a second): a delayed metric
                # sent right after the call waits for it, as long as PENDING_WAIT
                if action == "delayed" and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(PENDING_POLL)
                    continue
                return error_response(404, "request.invalid", exc.message)
            except CdswError as exc:
                return error_response(400, "request.invalid", exc.message)
            return web.json_response(answer)

    return [("POST", PATH, handle)]
