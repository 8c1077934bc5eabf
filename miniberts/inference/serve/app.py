"""The HTTP routes (Starlette): text-embeddings-inference's /embed, /predict, /tokenize, /health, /info, /metrics and
the OpenAI-style /v1/embeddings, each a thin layer over serve/service.py.

Every answer that is not a success is JSON `{"error": message, "error_type": kind}` (serve/bodies.py lists the
statuses); `Authorization: Bearer KEY` is checked on every route but /health and /metrics when --api-key is set.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import threading
import time

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import bodies
from .bodies import ApiError
from .service import ClientGone, Service

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away; nobody receives it, the metrics count it


class JSONResponse(Response):
    """JSON written by orjson. The standard library's encoder was the largest single share of the event loop's work
    per one-sentence request (py-spy on a Tiny server under 64 wrk clients); orjson writes the same text (the
    shortest round-trip form of each float64) more than ten times faster."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


# Seconds a client is asked to wait before it retries (the Retry-After header): a 429 clears within a pass or two; a
# 503 is a server loading or draining, which a load balancer sends elsewhere meanwhile. A client that retries at once
# makes the server answer thousands of 429s a second on the event loop the admitted requests need.
RETRY_AFTER = {429: "1", 503: "5"}


def error(status: int, error_type: str, message: str) -> JSONResponse:
    retry = RETRY_AFTER.get(status)
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status,
                        headers={"Retry-After": retry} if retry else None)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit` bytes (from Content-Length, else while reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body has {declared} bytes, more than --payload-limit {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is more than --payload-limit {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def labelled(rows: list[list[float]], id2label: list[str], regression: bool) -> list[list[dict]]:
    """Per row [{"label", "score"}], highest score first, from the scores the model thread computed per pass
    (probabilities, or logits for `raw_scores`); a regressor's one score under the label "score"."""
    if regression:
        return [[{"label": "score", "score": row[0]}] for row in rows]
    return [sorted(({"label": k, "score": v} for k, v in zip(id2label, row)), key=lambda x: -x["score"])
            for row in rows]


def create_app(service: Service) -> Starlette:
    cfg = service.cfg

    def route(path: str, handler, method: str = "POST", open_: bool = False) -> Route:
        """`handler(body or None, request) -> JSON-able or Response`, wrapped in the checks every route shares:
        the key, the state, the body's size and JSON, the JSON errors, and the metrics."""
        async def endpoint(request: Request) -> Response:
            start = time.monotonic()
            try:
                if cfg.api_key and not open_ and not _authorized(request, cfg.api_key):
                    raise ApiError(401, "unauthorized", "missing or wrong API key (send Authorization: Bearer KEY)")
                body = None
                if method == "POST":
                    service.check_ready()
                    body = bodies.json_object(await read_body(request, cfg.payload_limit))
                out = await handler(body, request)
                response = out if isinstance(out, Response) else JSONResponse(out)
            except ApiError as e:
                response = error(e.status, e.error_type, str(e))
            except (ClientGone, ClientDisconnect):
                response = Response(status_code=CLIENT_CLOSED)
            except Exception as e:  # an engine error or out of memory in this request's batch: 500, the server lives on
                log.exception("%s failed", path)
                response = error(500, "backend", f"{type(e).__name__}: {e}")
            service.metrics.requests.labels(path, str(response.status_code)).inc()
            service.metrics.request_seconds.labels(path).observe(time.monotonic() - start)
            return response

        return Route(path, endpoint, methods=[method])

    async def embed(body, request):
        inputs = bodies.texts(body, "inputs", cfg.max_client_batch_size)
        kind = ("embed", bodies.flag(body, "normalize", True))
        rows, _ = await service.run(inputs, kind, bodies.flag(body, "truncate", True), request,
                                    bodies.truncation_direction(body), bodies.optional_name(body, "prompt_name"))
        return [row.tolist() for row in rows]

    async def predict(body, request):
        inputs = bodies.sequences(body, "inputs", cfg.max_client_batch_size)
        kind = ("predict", bodies.flag(body, "raw_scores", False))
        rows, _ = await service.run(inputs, kind, bodies.flag(body, "truncate", True), request,
                                    bodies.truncation_direction(body))
        config = service.model.config
        answers = labelled(rows, config.id2label, config.regression)
        return answers[0] if inputs.one else answers

    async def tokenize(body, request):
        inputs = bodies.texts(body, "inputs", cfg.max_client_batch_size)
        special = bodies.flag(body, "add_special_tokens", True)
        return [[{"id": i, "text": token, "special": is_special, "start": start if not is_special else None,
                  "stop": stop if not is_special else None}
                 for i, token, is_special, start, stop in tokens if special or not is_special]
                for tokens in await service.token_lists(inputs, bodies.optional_name(body, "prompt_name"))]

    async def openai_embeddings(body, request):
        inputs = bodies.texts(body, "input", cfg.max_client_batch_size)
        fmt = bodies.choice(body, "encoding_format", "float", ("float", "base64"))
        rows, tokens = await service.run(inputs, ("embed", True), True, request)
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode() if fmt == "base64"
                               else row.tolist())}
                for i, row in enumerate(rows)]
        return {"object": "list", "data": data, "model": body.get("model") or service.source,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def health(body, request):
        if not service.healthy():
            raise ApiError(503, "unhealthy", f"the server is {service.state}"
                           + (" (the model thread is stuck or dead)" if service.state == "ready" else ""))
        return {"status": "ok"}

    async def info(body, request):
        service.check_ready()
        return service.info()

    async def metrics(body, request):
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if service.state == "loading":  # load beside the event loop, so /health answers 503 meanwhile
            threading.Thread(target=_start, args=(service,), name="miniberts-load", daemon=True).start()
        yield
        service.stop()

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, "not_found" if exc.status_code == 404 else "method_not_allowed", exc.detail)

    routes = [route("/embed", embed), route("/predict", predict), route("/tokenize", tokenize),
              route("/v1/embeddings", openai_embeddings), route("/health", health, "GET", open_=True),
              route("/info", info, "GET"), route("/metrics", metrics, "GET", open_=True)]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})


def _authorized(request: Request, key: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def _start(service: Service) -> None:
    try:
        service.start()
    except Exception:
        log.exception("loading %s failed", service.source)
        service.state = "failed"
