"""Request bodies -> inputs, and the JSON errors of the API (text-embeddings-inference's shapes).

Every refusal is an `ApiError`: its HTTP status, an `error_type` and a one-line message naming the field and what was
expected. 400: the body is not a JSON object; 413: more inputs than --max-client-batch-size; 422: a field of the
wrong type, no inputs, an empty input.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


@dataclass
class Inputs:
    texts: list[str]
    pairs: list[str] | None  # the second texts of sentence pairs (predict), or None
    one: bool  # the body held one input, not a list: the answer is that input's result, not a list of them

    @property
    def characters(self) -> int:
        return sum(map(len, self.texts)) + sum(map(len, self.pairs or ()))


def json_object(raw: bytes) -> dict:
    """The body as a JSON object. orjson reads it (and rejects invalid UTF-8) several times faster than the standard
    library: the event loop parses every request on the same cores as the model."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "malformed", f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", f"the body must be a JSON object, got {type(body).__name__}")
    return body


def flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(422, "validation", f"{key!r} must be true or false, got {value!r}")
    return value


def choice(body: dict, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = body.get(key, default)
    if value not in allowed:
        raise ApiError(422, "validation", f"{key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def truncation_direction(body: dict) -> str:
    """text-embeddings-inference's "truncation_direction": which end of a too-long input is cut, "Right" (the
    default: the end) or "Left" (the beginning); the lower-case spellings too. As tokenizers names it."""
    return choice(body, "truncation_direction", "Right", ("Right", "Left", "right", "left")).lower()


def optional_name(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, "validation", f"{key!r} must be a string or null, got {value!r}")
    return value


def texts(body: dict, key: str, limit: int) -> Inputs:
    """`key` as a string or a list of strings (embed, tokenize, the OpenAI route)."""
    value = _present(body, key)
    one = isinstance(value, str)
    items = [value] if one else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise ApiError(422, "validation", f"{key!r} must be a string or a list of strings")
    _check(items, key, limit)
    return Inputs(items, None, one)


def sequences(body: dict, key: str, limit: int) -> Inputs:
    """`key` as a string, a list of strings, or a list of [text, text_pair] pairs ([text] alone is a single text)."""
    value = _present(body, key)
    if isinstance(value, str):
        _check([value], key, limit)
        return Inputs([value], None, True)
    if not isinstance(value, list):
        raise ApiError(422, "validation", f"{key!r} must be a string, a list of strings or a list of [text, pair] lists")
    if all(isinstance(t, str) for t in value):
        _check(value, key, limit)
        return Inputs(value, None, False)
    if not all(isinstance(p, list) and len(p) in (1, 2) and all(isinstance(t, str) for t in p) for p in value):
        raise ApiError(422, "validation", f"{key!r}: every item must be a string, or a list of one or two strings")
    sizes = {len(p) for p in value}
    if len(sizes) > 1:
        raise ApiError(422, "validation", f"{key!r}: mixes single texts and pairs; send them in separate requests")
    first = [p[0] for p in value]
    pairs = [p[1] for p in value] if sizes == {2} else None
    _check(first + (pairs or []), key, limit, rows=len(value))
    return Inputs(first, pairs, False)


def _present(body: dict, key: str):
    if key not in body:
        raise ApiError(422, "validation", f"the body has no {key!r} field")
    return body[key]


def _check(items: list[str], key: str, limit: int, rows: int | None = None) -> None:
    rows = len(items) if rows is None else rows
    if rows == 0:
        raise ApiError(422, "empty", f"{key!r} is empty: send at least one input")
    if rows > limit:
        raise ApiError(413, "validation", f"{key!r} has {rows} inputs, more than --max-client-batch-size {limit}")
    empty = next((i for i, t in enumerate(items) if not t.strip()), None)
    if empty is not None:
        raise ApiError(422, "empty", f"{key!r}: input {empty % rows} is an empty string")
