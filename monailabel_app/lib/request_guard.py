"""What the app adds to MONAI Label 0.8.5's HTTP routes so that a client never chooses a server file, a rejected
request leaves nothing behind, and a malformed request gets a 4xx that says what is wrong (see ``docs/security.md``).

MONAI Label's endpoints (``monailabel/endpoints/infer.py``, ``datastore.py``, ...) copy an upload to a temporary file
(``/tmp/tmpXXXXXXXX.<ext>``) and schedule its removal as a *background task*, which Starlette runs only after a
successful response: every rejected request (404, 422, 500) left its upload in ``/tmp``, whatever its size. Their
``params`` / ``info`` form fields go through ``json.loads`` unchecked (a 500 without detail), and ``params`` is merged
into the request, so it could set ``image`` or ``annotation`` to a path on the server.

:func:`install_request_guards` wraps the app's routes when the server starts (the app has no other hook on them):

* **body size**: a request body larger than ``max_bytes`` is answered 413, found from its ``Content-Length`` before
  the route sees it, or as soon as it grows past the limit (chunked bodies); the rest is read and dropped, so nothing
  of it reaches a temporary file;
* **JSON form fields** (``params``, ``info``, ``wsi``): not JSON, or not a JSON object: 422 naming the field and the
  parser's position, without echoing the content;
* **infer params** may not name inputs (:data:`PATH_KEYS`: ``image``, ``annotation``, ``label``, ...): 422; the image
  is the ``image`` id (from the datastore) or the uploaded ``file``, and the app's ``infer`` checks which
  (:func:`uploaded_file_expected`);
* **clean-up**: when an endpoint raises, the removals it had scheduled run at once, so a rejected upload's temporary
  file is gone before the error is sent.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterable

from fastapi import BackgroundTasks, HTTPException
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)

#: Default largest request body: a radiograph DICOM is 5-50 MB; labels are far smaller.
DEFAULT_MAX_UPLOAD_MB = 64
#: Form fields that MONAI Label parses as JSON.
JSON_FIELDS = ("params", "info", "wsi")
#: Request keys that name a file: an infer request's ``params`` may not set them.
PATH_KEYS = ("image", "image_path", "annotation", "label", "file", "session", "model")
#: A refused body is read and dropped up to this many times the limit before the answer (see ``limit_body``).
DRAIN_FACTOR = 16
#: Methods whose requests carry a body.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_UPLOAD = contextvars.ContextVar("aasn_infer_upload", default=False)


def uploaded_file_expected() -> bool:
    """Whether the infer request being served came with an uploaded ``file`` (so that its ``image`` is the temporary
    copy MONAI Label made of it, not an id from the datastore)."""
    return _UPLOAD.get()


class BodyTooLarge(Exception):
    """Raised inside the body reader when a request body grows past the limit."""


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body larger than {max_bytes // (1024 * 1024)} MB (the app's max_upload_mb); refused"},
        status_code=413,
    )


def limit_body(app: Callable, max_bytes: int) -> Callable:
    """An ASGI app that refuses request bodies above ``max_bytes`` (413) before ``app`` keeps them anywhere."""

    async def limited(scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") not in BODY_METHODS:
            return await app(scope, receive, send)
        more_body = True

        async def refuse():
            """Read and drop what the client still sends (nothing of it is kept; up to 16 times the limit), then answer
            413: a client that is still sending when the server answers and closes gets a reset connection instead."""
            nonlocal more_body
            dropped = 0
            while more_body and dropped <= DRAIN_FACTOR * max_bytes:
                message = await receive()
                dropped += len(message.get("body", b""))
                more_body = message.get("type") == "http.request" and message.get("more_body", False)
            await _too_large(max_bytes)(scope, receive, send)

        for name, value in scope.get("headers") or []:
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                return await refuse()
        received, started, exceeded = 0, False, False

        async def counted():
            nonlocal received, more_body, exceeded
            message = await receive()
            if message.get("type") == "http.request":
                more_body = message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise BodyTooLarge()
            else:
                more_body = False
            return message

        async def watched(message):
            nonlocal started
            if exceeded and not started:  # the framework's own answer to the cut body (400): 413 replaces it
                return
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await app(scope, counted, watched)
        except BodyTooLarge:
            pass
        if exceeded and not started:
            await refuse()

    return limited


def _check_json_field(name: str, value) -> dict:
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:  # its message holds a position, not the content
        raise HTTPException(
            422,
            f"form field '{name}' is not valid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno}); expected a JSON object",
        ) from None
    if not isinstance(parsed, dict):
        raise HTTPException(422, f"form field '{name}' is a JSON {type(parsed).__name__}; expected a JSON object")
    return parsed


async def _run_scheduled_cleanup(background: BackgroundTasks | None) -> None:
    """Run the removals an endpoint scheduled for after its response, now that there will be none."""
    if background is None:
        return
    tasks, background.tasks = list(background.tasks), []
    for task in tasks:
        try:
            await task()
        except Exception as error:  # a clean-up that fails must not hide the request's own error
            logger.warning(f"clean-up after a rejected request failed: {error}")


def guard_endpoint(endpoint: Callable, infer: bool = False) -> Callable:
    """``endpoint`` with the checks of the module docstring (same signature, so FastAPI injects the same things).

    Args:
        endpoint: a MONAI Label ``async`` endpoint.
        infer: it is the infer route: ``params`` may not hold :data:`PATH_KEYS`, and an uploaded ``file`` is flagged
            for :func:`uploaded_file_expected`.
    """
    signature = inspect.signature(endpoint)
    background_names = [
        n for n, p in signature.parameters.items() if p.annotation in (BackgroundTasks, "BackgroundTasks")
    ]
    json_names = [n for n in signature.parameters if n in JSON_FIELDS]

    @functools.wraps(endpoint)
    async def guarded(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        background = next((bound.arguments.get(n) for n in background_names if bound.arguments.get(n)), None)
        token = None
        try:
            for name in json_names:
                parsed = _check_json_field(name, bound.arguments.get(name))
                if infer and name == "params":
                    named = sorted(set(parsed) & set(PATH_KEYS))
                    if named:
                        raise HTTPException(
                            422,
                            f"params may not set {named}: the server never reads a file a client names; send the image "
                            'id as ?image=<id> (or upload the file), and landmarks as {"landmarks": {name: [x, y]}}',
                        )
            if infer:
                token = _UPLOAD.set(bound.arguments.get("file") is not None)
            return await endpoint(*args, **kwargs)
        except BaseException:
            await _run_scheduled_cleanup(background)
            raise
        finally:
            if token is not None:
                _UPLOAD.reset(token)

    return guarded


def _replacement(route: APIRoute, endpoint: Callable) -> APIRoute:
    return APIRoute(
        route.path,
        endpoint,
        methods=route.methods,
        name=route.name,
        summary=route.summary,
        description=route.description,
        tags=route.tags,
        dependencies=route.dependencies,
        responses=route.responses,
        deprecated=route.deprecated,
        include_in_schema=route.include_in_schema,
        response_class=route.response_class,
        status_code=route.status_code,
    )


def install_request_guards(app, max_bytes: int, infer_paths: Iterable[str] = ("/infer/{model}",)) -> int:
    """Wrap every API route of the FastAPI ``app`` (see the module docstring); returns how many were wrapped.

    Idempotent: routes already wrapped are left as they are.

    Args:
        app: MONAI Label's FastAPI application (``monailabel.app.app``).
        max_bytes: largest request body.
        infer_paths: the infer routes' paths (their ``params`` may not name files).
    """
    infer_paths = set(infer_paths)
    routes = app.router.routes
    wrapped = 0
    for index, route in enumerate(list(routes)):
        if not isinstance(route, APIRoute) or getattr(route.endpoint, "_aasn_guarded", False):
            continue
        endpoint = guard_endpoint(route.endpoint, infer=route.path in infer_paths)
        endpoint._aasn_guarded = True
        new = _replacement(route, endpoint)
        new.app = limit_body(new.app, max_bytes)
        routes[index] = new
        wrapped += 1
    app.openapi_schema = None  # documented again from the new routes
    logger.info(f"request guards on {wrapped} routes (bodies up to {max_bytes // (1024 * 1024)} MB)")
    return wrapped
