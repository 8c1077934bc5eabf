"""A Ray Serve deployment of the same app: each replica builds `create_app` with its own model, model thread and
batcher, and Ray's proxy spreads requests over the replicas (on one machine or a cluster).

    serve run miniberts.inference.serve.ray_app:build model=DIR [replicas=2] [max_batch_tokens=16384] ...

The arguments are the flags of `miniberts serve` with underscores (host, port and workers excepted: Ray's proxy
binds, Ray places the replicas), checked by the same ServeConfig. Needs `pip install "ray[serve]"` (the `ray` extra).
Reference: Ray Serve's `serve.ingress` with a builder function (docs.ray.io, ray.serve.ingress).
"""

from __future__ import annotations

import dataclasses

from ray import serve

from ...errors import MinibertsError
from ...settings import check_value
from .app import create_app
from .config import ServeConfig
from .service import Service

PLACED_BY_RAY = ("host", "port", "workers")


def serve_config(args: dict) -> tuple[str, int, ServeConfig]:
    """(model, replicas, settings) from `serve run`'s key=value arguments (all strings)."""
    args = dict(args)
    if "model" not in args:
        raise MinibertsError("ray_app: give model=DIR (anything `miniberts.load` takes)")
    model, replicas = args.pop("model"), _value("replicas", args.pop("replicas", "1"), int)
    check_value("replicas", replicas, int, {"min": 1})
    fields = {f.name: f for f in dataclasses.fields(ServeConfig) if f.name not in PLACED_BY_RAY}
    settings = {}
    for key, text in args.items():
        if key not in fields:
            raise MinibertsError(f"ray_app: unknown setting {key!r} (the settings are {', '.join(fields)})")
        default = fields[key].default
        kind = bool if isinstance(default, bool) else int if isinstance(default, int) or key == "threads" else str
        settings[key] = _value(key, text, kind)
    return model, replicas, ServeConfig(**settings)


def _value(key: str, text: str, kind: type):
    """`serve run`'s key=value text as the setting's type; one-line error naming it otherwise."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise MinibertsError(f"ray_app: {key} must be true or false, got {text!r}")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise MinibertsError(f"ray_app: {key} must be a whole number, got {text!r}") from None


def build(args: dict):
    """The Ray Serve application `serve run` starts."""
    model, replicas, cfg = serve_config(args)

    def asgi_app():  # runs on each replica: the app's lifespan loads the model there (/health is 503 meanwhile)
        return create_app(Service(cfg, model))

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": cfg.threads or 1})
    @serve.ingress(asgi_app)
    class Miniberts:
        pass

    return Miniberts.bind()
