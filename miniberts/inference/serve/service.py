"""What the routes call: the loaded model, its tokenizer thread and its batcher, and the server's state.

A request is admitted (or refused with 429 at once), tokenized on the tokenizer thread, queued for the model thread,
and awaited together with its client's disconnection: a client that goes cancels its inputs before they run.
The model's own entry points do the work (`Model.embed_tokens`, `Model.predict_tokens`), so a served vector is the
one `Model.embed` gives and a served label the one `miniberts predict` gives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib.metadata
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from starlette.requests import Request

from ...device import resolve_dtype
from ...errors import MinibertsError
from ...hub import resolved_name
from ...model import BertForSequenceClassification
from ..backends import precision_of, resolve
from ..config import EmbedConfig, PredictConfig
from ..loaded_model import Model, load
from .batcher import Batcher, Job
from .bodies import ApiError, Inputs
from .config import ServeConfig
from .forwards import TOKENS_ONLY, PackedForward, measure, plan
from .metrics import Metrics

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def longest_inputs(model: Model) -> tuple[int, int | None]:
    """Tokens per input, [CLS]/[SEP] included: (embeddings, predictions or None without a head). Embeddings run as
    `Model.embed` runs them (a sentence-transformers directory's max_seq_length); predictions as `miniberts predict`
    runs them (its default --max-length, within the positions), so a served label is the one it writes. Up to the
    positions, a long review ran to 512 tokens here and to 128 there: other labels for long inputs, and, with
    attention quadratic in the length, twice the work per sentence of `Model.predict` on the same texts."""
    embed_length = model.embedding_settings(EmbedConfig())[2]
    head = isinstance(model.module, BertForSequenceClassification)
    return embed_length, min(PredictConfig().max_length, model.config.max_position_embeddings) if head else None


def check_budget(model: Model, cfg: ServeConfig) -> None:
    """--max-batch-tokens must hold the longest input alone, or a long request could never run."""
    longest = max(n for n in longest_inputs(model) if n)
    if cfg.max_batch_tokens < longest:
        raise MinibertsError(f"--max-batch-tokens must be at least {longest}, the longest input of {model.source} "
                             f"(tokens with [CLS]/[SEP]), got {cfg.max_batch_tokens}")


# auto picks the engine of the passes for forwards of this many rows, a typical forward of a loaded server (the rows
# of a pass are split by serve/forwards.py's plan; a pass of one input runs on auto's batch-1 pick).
PICK_ROWS = 8
# A request of at most this many characters is tokenized on the event loop itself (~0.1 ms) rather than handed to the
# tokenizer thread and back: two thread switches per request, which one-sentence requests at full load pay on the same
# cores as the model. Longer ones go to the thread, so a large body never stalls the loop.
INLINE_CHARACTERS = 2000


class Service:
    def __init__(self, cfg: ServeConfig, source: str, model: Model | None = None):
        self.cfg = cfg
        self.source = source
        self.model = model
        self.state = "loading"  # -> "ready" -> "draining"; "failed" when loading failed
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.forward_cost = TOKENS_ONLY  # what a forward costs: measured at start-up, after the warm-up
        self.packs = False  # whether passes may run as packed rows: decided at start-up (--pack and the engine)
        # One tokenizer thread: the tokenizer's truncation setting is shared state, so calls must not overlap (the
        # lock also covers small requests tokenized on the event loop).
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="miniberts-tokenizer")
        self._tokenizer_lock = threading.Lock()

    # --- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load (when not given), check the batch budget, warm the backend up, start the model thread."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.torch_threads = torch.get_num_threads()
        if self.model is None:
            self.model = load(self.source)
        check_budget(self.model, self.cfg)
        self.embed_length, self.predict_length = longest_inputs(self.model)
        # Two picks of auto, made once: for forwards of PICK_ROWS rows, and for passes of one input (a lone
        # request: what a client at concurrency 1 waits for). Where they differ (bf16 Tiny: OpenVINO for rows, ONNX
        # Runtime for one) both engines load: with OpenVINO alone a one-sentence request waited five times as long
        # (idle EPYC, c=1: p50 12.4 ms against 2.3 ms with ONNX Runtime), behind sentence-transformers + FastAPI, for
        # ~200 MiB saved. Where they agree (MiniLM-L6 with the defaults: OpenVINO bf16) one engine runs every pass.
        self.precision = precision_of(resolve_dtype(self.cfg.dtype, self.model.device), self.cfg.int8)
        config, device = self.model.config, self.model.device
        self.backend = resolve(self.cfg.backend, config, self.precision, PICK_ROWS, device)
        self.backend_one = resolve(self.cfg.backend, config, self.precision, 1, device)
        self.batcher = Batcher(self._compute, self.cfg.max_batch_tokens, self.cfg.max_concurrent_requests,
                               self.metrics, self._model_thread_threads)
        # Packed passes where the passes' engine runs them (and --pack): decided before the warm-up, whose passes of
        # short inputs then export and compile its packed graph too.
        self.packs = self.cfg.pack and self.model.packs(EmbedConfig(batch_size=PICK_ROWS, dtype=self.cfg.dtype,
                                                                    backend=self.backend, int8=self.cfg.int8))
        # Warm up on one row and on many, so the engine's one-time export and first shapes happen before /health
        # answers 200, not in the first requests' passes.
        for rows in (1, max(2, self.cfg.max_client_batch_size)):
            ids, types = self.model.embedding_tokens(["warm up"] * rows, self.embed_length)
            self._compute(("embed", True), ids, types)
            if self.predict_length:
                self._compute(("predict", False), ids, types)
        self.forward_cost = measure(self._time_forward, self.embed_length)
        log.info("a forward costs %s", self.forward_cost)
        freeze_loaded_objects()
        self.batcher.start()
        self.state = "ready"
        log.info("serving %s", self.source)

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self._tokenizer_thread.shutdown()
        gc.unfreeze()  # a process that goes on (a test, a Ray replica) collects this server's objects again

    def healthy(self) -> bool:
        return self.state == "ready" and self.batcher is not None and self.batcher.healthy()

    # --- the model thread's work ----------------------------------------------------------------------------
    def _model_thread_threads(self) -> None:
        """On the model thread, before its first pass: where engines run every pass (their own threads, fixed when
        they were made at warm-up), torch only pools and normalizes a forward's output, too little work to split,
        and an op it splits can leave an OpenMP worker spinning on a core the event loop and the engine need. So torch
        runs on this thread alone (torch.set_num_threads sets the calling thread's OpenMP threads and those of
        threads started later, so it is set here either way; engines are all made at warm-up, with the server's)."""
        torch.set_num_threads(self.torch_threads if "torch" in (self.backend, self.backend_one) else 1)

    def _compute(self, kind: tuple, ids: list[list[int]], type_ids: list[list[int]]):
        """One pass of the batcher: one input on auto's batch-1 pick; more in the forwards `forwards.plan` finds
        cheapest for this model (so a long text pads only its few neighbours in length, not the whole pass)."""
        cfg, one = self.cfg, len(ids) == 1
        backend = self.backend_one if one else self.backend
        longest = self.embed_length if kind[0] == "embed" else self.predict_length
        forwards = None if one else plan([len(x) for x in ids], self.forward_cost, longest, self.packs,
                                         cfg.max_batch_tokens)
        packed = isinstance(forwards, PackedForward)
        if kind[0] == "embed":
            settings = EmbedConfig(normalize=kind[1], batch_size=PICK_ROWS, dtype=cfg.dtype, backend=backend,
                                   int8=cfg.int8)
            if packed:
                return self.model.embed_packed(ids, type_ids, settings, forwards.rows, forwards.width)
            return self.model.embed_tokens(ids, type_ids, settings, forwards=forwards)
        settings = PredictConfig(batch_size=PICK_ROWS, dtype=cfg.dtype, backend=backend, int8=cfg.int8)
        logits = (self.model.predict_packed(ids, type_ids, settings, forwards.rows, forwards.width) if packed
                  else self.model.predict_tokens(ids, type_ids, settings, forwards))
        # Scores as `predict.results` computes them (a float32 softmax; the logits themselves for raw_scores and a
        # regressor), once for the pass and as plain lists: the event loop only names and sorts them per request.
        raw = kind[1] or self.model.config.regression
        return (logits if raw else torch.softmax(logits.float(), -1)).tolist()

    def _time_forward(self, rows: int, width: int) -> None:
        """One forward of `rows` inputs of `width` tokens on the passes' engine (start-up's measurement)."""
        ids = [[self.model.tokenizer.cls_id] + [self.model.tokenizer.unk_id] * (width - 2)
               + [self.model.tokenizer.sep_id]] * rows
        settings = EmbedConfig(normalize=False, batch_size=PICK_ROWS, dtype=self.cfg.dtype, backend=self.backend,
                               int8=self.cfg.int8)
        self.model.embed_tokens(ids, [[0] * width] * rows, settings, forwards=[(list(range(rows)), width)])

    # --- requests -------------------------------------------------------------------------------------------
    def tokens(self, inputs: Inputs, predict: bool, truncate: bool, direction: str = "right",
               prompt_name: str | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids as the model runs them (embeddings after their prompt: `Model.embedding_tokens`), a too-long
        input cut at its end (`direction` "right") or its beginning ("left"); 422 naming the first input over the
        length when not `truncate`."""
        length = self.predict_length if predict else self.embed_length
        width = length if truncate else length + 1  # one token more shows which inputs are too long
        with self._tokenizer_lock:
            if predict:
                ids, types = self.model.tokenizer.encode(inputs.texts, inputs.pairs, width, direction=direction)
            else:
                ids, types = self.model.embedding_tokens(inputs.texts, width, direction, prompt_name)
        long = next((i for i, x in enumerate(ids) if len(x) > length), None)
        if long is not None:
            raise ApiError(422, "validation", f"input {long} is longer than the model's {length} tokens; "
                                              "send \"truncate\": true to cut it")
        return ids, types

    async def run(self, inputs: Inputs, kind: tuple, truncate: bool, request: Request, direction: str = "right",
                  prompt_name: str | None = None) -> tuple[list, int]:
        """Admit, tokenize (after the prompt `prompt_name` or the model's default one, a too-long input cut at the
        `direction` end), queue and await `inputs` as `kind` (a `Job`'s): (one result per input in order, the number
        of tokens they ran as)."""
        self.check_ready()
        predict = kind[0] == "predict"
        if predict and not self.predict_length:
            raise ApiError(422, "validation", f"{self.source} has no classification/regression head: /predict needs "
                                              "a fine-tuned classifier (`miniberts finetune`); /embed works")
        if not predict:
            self.prompt(prompt_name)  # a prompt it does not have: 422 before admission
        count = len(inputs.texts)
        if not self.batcher.admit(count):
            raise ApiError(429, "overloaded", f"more than --max-concurrent-requests "
                                              f"{self.cfg.max_concurrent_requests} inputs are waiting; retry later")
        loop = asyncio.get_running_loop()
        try:
            if inputs.characters <= INLINE_CHARACTERS:
                ids, types = self.tokens(inputs, predict, truncate, direction, prompt_name)
            else:
                ids, types = await loop.run_in_executor(self._tokenizer_thread, self.tokens, inputs, predict, truncate,
                                                        direction, prompt_name)
        except BaseException:
            self.batcher.release(count)
            raise
        job = Job(kind, ids, types, loop, loop.create_future())
        self.batcher.submit(job)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            job.cancelled = True  # the model thread drops its queued inputs
            job.future.cancel()
            raise ClientGone()
        return job.future.result(), sum(len(x) for x in ids)

    async def token_lists(self, inputs: Inputs, prompt_name: str | None = None
                          ) -> list[list[tuple[int, str, bool, int, int]]]:
        """Per input, its tokens as embeddings run it (after the prompt, as `tokens`): (id, token, special, start,
        stop) each, offsets into the prompted text."""
        self.check_ready()
        prompt = self.prompt(prompt_name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, self._pieces, [prompt + t for t in inputs.texts])

    def _pieces(self, texts: list[str]) -> list[list[tuple[int, str, bool, int, int]]]:
        with self._tokenizer_lock:
            return self.model.tokenizer.pieces(texts, self.embed_length)

    def prompt(self, name: str | None) -> str:
        """The model's prompt `name` (its default without one: `Model.prompt`); 422 for a name it does not have."""
        try:
            return self.model.prompt(name)
        except MinibertsError as e:
            raise ApiError(422, "validation", f"'prompt_name': {e}") from None

    def check_ready(self) -> None:
        if self.state != "ready":
            raise ApiError(503, "unhealthy", f"the server is {self.state}")

    def info(self) -> dict:
        model, cfg = self.model, self.cfg
        head = isinstance(model.module, BertForSequenceClassification)
        return {
            "model_id": self.source,
            "model_sha": (resolved_name(self.source) or "@").partition("@")[2] or None,  # a Hub id's commit
            "model_type": ("regressor" if model.config.regression else "classifier") if head else "embedding",
            "labels": list(model.config.id2label) if head else None,
            "dimensions": model.config.hidden_size,
            "pooling": model.embedding_settings(EmbedConfig())[0],
            "max_input_length": self.embed_length,
            "max_predict_length": self.predict_length,  # /predict's inputs, as `miniberts predict` cuts them
            "backend": self.backend,  # what "auto" resolved to for forwards of many rows, as the precision
            "backend_one_input": self.backend_one,  # and for passes of one input
            "precision": self.precision,
            "packed_passes": self.packs,  # passes of short inputs may run as packed rows (serve/forwards.py)
            "forward_cost": dataclasses.asdict(self.forward_cost),  # seconds, measured at start-up (serve/forwards.py)
            "max_batch_tokens": cfg.max_batch_tokens,
            "max_client_batch_size": cfg.max_client_batch_size,
            "max_concurrent_requests": cfg.max_concurrent_requests,
            "payload_limit": cfg.payload_limit,
            "version": importlib.metadata.version("miniberts"),
        }


def freeze_loaded_objects() -> None:
    """Move every object alive now (torch, the engines, the model, the tokenizer, the web stack: ~240,000 for Tiny)
    out of the cyclic garbage collector's sight. A server keeps them to the end, but each full collection walked them
    all, holding the GIL: 0.2-0.3 s on a loaded 2-core EPYC, a pause of every request in flight that a 4-s cell at
    c=64 met once or twice, enough to set its p99. The objects that requests create are collected as before."""
    gc.collect()  # garbage of the loading first: a frozen cycle would never be freed
    gc.freeze()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
