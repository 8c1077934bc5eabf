"""Start-up and shut-down of `miniberts serve`: uvicorn runs the app; SIGTERM/SIGINT drains it.

Draining is uvicorn's graceful shutdown (stop listening, close idle connections, wait for every request in flight,
then the app's shutdown, which lets the model thread finish its queue), with two additions: /health (and any new
request on a kept-alive connection) answers 503 from the signal on, and the process exits 0 after a clean drain
(uvicorn re-raises the signal it caught, which would end the process with the signal's status instead).
`--workers N`: uvicorn's supervisor runs N processes on the one socket, each loading the model itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal

import uvicorn
from uvicorn.supervisors import Multiprocess

from ..loaded_model import load
from .app import create_app
from .config import ServeConfig
from .service import Service, check_budget

SETTINGS_ENV = "MINIBERTS_SERVE_SETTINGS"  # how the settings reach the --workers processes (JSON)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig, frame) -> None:
        self.service.state = "draining"
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        original = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(cfg: ServeConfig, source: str) -> None:
    """Load `source`, check it against the limits (one-line errors before anything binds), then serve until a signal."""
    model = load(source)
    check_budget(model, cfg)
    uvicorn_settings = dict(host=cfg.host, port=cfg.port, access_log=False, log_level="info",
                            timeout_graceful_shutdown=None)
    if cfg.workers == 1:
        service = Service(cfg, source, model)
        service.start()
        DrainingServer(uvicorn.Config(create_app(service), **uvicorn_settings), service).run()
        return
    del model  # each worker process loads its own copy
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.workers)
    os.environ[SETTINGS_ENV] = json.dumps({"source": source, **dataclasses.asdict(cfg), "threads": threads})
    config = uvicorn.Config(f"{__name__}:app_from_env", factory=True, workers=cfg.workers, **uvicorn_settings)
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def app_from_env():
    """The app of one --workers process (uvicorn calls this in the process). uvicorn's own server runs it there, so
    the draining state is set by a signal handler chained before uvicorn's."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    service = Service(ServeConfig(**{k: v for k, v in settings.items() if k != "source"}), settings["source"])
    for sig in SIGNALS:
        after = signal.getsignal(sig)

        def drain(signum, frame, after=after):
            service.state = "draining"
            if callable(after):
                after(signum, frame)

        signal.signal(sig, drain)
    return create_app(service)
