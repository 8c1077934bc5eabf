"""The settings of `miniberts serve`: one dataclass, checked by miniberts/settings.py like every command's."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...device import DTYPES
from ...settings import validate
from ..backends import BACKENDS
from ..config import BACKEND_HELP, DTYPE_HELP, INT8_HELP


@dataclass
class ServeConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (any other than 127.0.0.1 exposes the "
                                                              "server beyond this machine)"})
    port: int = field(default=8080, metadata={"help": "TCP port", "min": 0, "max": 65535})
    max_batch_tokens: int = field(default=16384, metadata={
        "help": "padded tokens (rows x longest row) per forward pass; at least the model's longest input",
        "min": 1})
    max_client_batch_size: int = field(default=32, metadata={"help": "most inputs in one request (more: 413)",
                                                              "min": 1})
    max_concurrent_requests: int = field(default=512, metadata={
        "help": "most inputs waiting or running at once; a request that would exceed it gets 429 at once", "min": 1})
    payload_limit: int = field(default=2_000_000, metadata={"help": "largest request body in bytes (larger: 413)",
                                                             "min": 1})
    api_key: str | None = field(default=None, metadata={
        "help": "require `Authorization: Bearer KEY` on every route but /health and /metrics"})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP, "choices": BACKENDS})
    int8: bool = field(default=False, metadata={"help": INT8_HELP})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP, "choices": DTYPES})
    pack: bool = field(default=True, metadata={
        "help": "run a pass of short inputs as rows of several inputs each, in one forward, where the engine can "
                "(openvino) and the measured cost says it is cheaper than padded forwards (--no-pack: never)"})
    workers: int = field(default=1, metadata={"help": "server processes on the one port, each with its own model",
                                              "min": 1})
    threads: int | None = field(default=None, metadata={
        "help": "intra-op threads per worker (default: the cores divided among the workers)", "min": 1})

    def __post_init__(self):
        validate(self)
