"""What every route shares: reading the body within its limit, JSON in and out, the
request headers callers may set (request id, routing key, pinned version)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from signalops.serving.errors import MalformedRequest, TooLarge, UnsupportedMediaType
from signalops.serving.inputs import KEY, REQUEST_ID, check_version, media_type_ok

JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=JSON,
        headers=headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused past ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds {limit} bytes")
    chunks, size, more = [], 0, True
    while more:  # the ASGI messages themselves: Request.stream() adds a layer per chunk
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequest("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def require_json(content_type: str | None) -> None:
    if not media_type_ok(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {str(content_type)[:80]!r} is not JSON: send application/json"
        )


async def json_body(request: Request, limit: int) -> Any:
    require_json(request.headers.get("content-type"))
    raw = await read_body(request, limit)
    if not raw:
        raise MalformedRequest("empty request body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"malformed JSON: {exc}") from None


def pinned_version(request: Request) -> str | None:
    """The version a caller pins: ``X-Model-Version`` header (wins) or ``?version=``."""
    header = request.headers.get("x-model-version")
    # no query string (the usual request): Starlette's parse of it is skipped
    query = request.query_params.get("version") if request.scope["query_string"] else None
    if query is not None:
        query = check_version(query, "parameter 'version'")
    if header is not None:
        return check_version(header, "header X-Model-Version")
    return query


def header_request_id(request: Request) -> str | None:
    value = request.headers.get("x-request-id")
    return None if value is None else REQUEST_ID.check(value, "header X-Request-Id")


def header_key(request: Request) -> str:
    """The routing key (``X-Request-Key``): the same key always meets the same model."""
    return KEY.check(request.headers.get("x-request-key", ""), "header X-Request-Key")
