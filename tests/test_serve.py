"""`miniberts serve`: the routes' shapes against sentence-transformers and `miniberts predict`, every error status with
its JSON body (the server healthy after each), 429 under a flood, the API key, the batcher's budget and dropping of
gone clients, and one real server process: a client killed mid-request, then SIGTERM with requests in flight.

The app runs in-process (starlette's TestClient, httpx's ASGI transport) except in the one process test. Fp32 on the
torch backend throughout, so vectors compare at 1e-4 (measured ~1e-6 against sentence-transformers).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MINILM, needs_minilm

import miniberts
from miniberts.checkpoint import save_hf
from miniberts.cli import main
from miniberts.config import BertConfig
from miniberts.errors import MinibertsError
from miniberts.inference.config import PredictConfig
from miniberts.model import BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from starlette.testclient import TestClient  # noqa: E402

from miniberts.inference.serve.app import create_app  # noqa: E402
from miniberts.inference.serve.batcher import STALL_SECONDS, Batcher, Job  # noqa: E402
from miniberts.inference.serve.config import ServeConfig  # noqa: E402
from miniberts.inference.serve.metrics import Metrics  # noqa: E402
from miniberts.inference.serve.forwards import WIDTH_STEP, ForwardCost, plan  # noqa: E402
from miniberts.inference.serve.service import INLINE_CHARACTERS, Service  # noqa: E402

TEXTS = ["A three-hour cinema master class.", "Dull.",
         "It's always fascinating to watch Marker the essayist at work, even when the film around him falls apart.",
         "Funny, warm and over too soon."]
LABELS = ["negative", "neutral", "positive"]


def started(model_dir, **settings) -> Service:
    service = Service(ServeConfig(backend="torch", dtype="fp32", **settings), str(model_dir),
                      miniberts.load(model_dir, "cpu"))
    service.start()
    return service


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, id2label=LABELS)
    return str(save_hf(BertForSequenceClassification(cfg), WordPieceTokenizer(BUILTIN_VOCAB),
                       tmp_path_factory.mktemp("clf")))


@pytest.fixture(scope="module")
def tiny_client(tiny):
    service = started(tiny, max_client_batch_size=4, payload_limit=2000)
    with TestClient(create_app(service)) as client:
        yield client, service


@pytest.fixture(scope="module")
def clf_client(classifier):
    with TestClient(create_app(started(classifier))) as client:
        yield client


@needs_minilm
def test_embed_and_openai_routes_equal_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    expected = st.SentenceTransformer(str(MINILM), device="cpu").encode(TEXTS)
    with TestClient(create_app(started(MINILM))) as client:
        many = np.array(client.post("/embed", json={"inputs": TEXTS}).json())
        one = np.array(client.post("/embed", json={"inputs": TEXTS[2]}).json())
        openai = client.post("/v1/embeddings", json={"input": TEXTS, "model": "m", "encoding_format": "base64"}).json()
        raw = np.array(client.post("/embed", json={"inputs": TEXTS, "normalize": False}).json())
        info = client.get("/info").json()
    assert many.shape == (4, 384) and np.abs(many - expected).max() < 1e-4
    assert one.shape == (1, 384) and np.abs(one[0] - expected[2]).max() < 1e-4  # 2-D even for one string
    vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in openai["data"]])
    assert [d["index"] for d in openai["data"]] == [0, 1, 2, 3] and openai["object"] == "list"
    assert np.abs(vectors - expected).max() < 1e-4 and openai["model"] == "m"
    assert openai["usage"]["prompt_tokens"] == sum(len(ids) for ids in WordPieceTokenizer(MINILM / "vocab.txt")
                                                   .encode(TEXTS, None, 256)[0])
    unnormalized = miniberts.load(MINILM, "cpu").embed(TEXTS, normalize=False, dtype="fp32", backend="torch")
    assert np.abs(raw - unnormalized).max() < 1e-4 and np.linalg.norm(raw, axis=1).min() > 1.5
    assert info["dimensions"] == 384 and info["pooling"] == "mean" and info["max_input_length"] == 256
    assert info["precision"] == "fp32" and info["backend"] == "torch" and info["model_sha"] is None  # not a Hub id


def test_predict_labels_equal_miniberts_predict(clf_client, classifier, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    assert main(["predict", classifier, str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.jsonl"),
                 "--dtype", "fp32", "--backend", "torch"]) == 0
    cli = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    answers = clf_client.post("/predict", json={"inputs": TEXTS}).json()
    assert len(answers) == len(TEXTS)
    for answer, row in zip(answers, cli):
        assert [a["score"] for a in answer] == sorted((a["score"] for a in answer), reverse=True)
        assert answer[0]["label"] == row["label"] and {a["label"] for a in answer} == set(LABELS)
        assert all(abs(a["score"] - row["probabilities"][a["label"]]) < 1e-5 for a in answer)
    one = clf_client.post("/predict", json={"inputs": TEXTS[0]}).json()
    assert one == answers[0]  # one string -> one list
    assert len(TEXTS[2]) * 30 > INLINE_CHARACTERS  # so this request is tokenized on the tokenizer thread
    many = clf_client.post("/predict", json={"inputs": [TEXTS[2]] * 30}).json()
    assert len(many) == 30 and all(abs(a["score"] - b["score"]) < 1e-5 and a["label"] == b["label"]
                                   for answer in many for a, b in zip(answer, answers[2]))
    raw = clf_client.post("/predict", json={"inputs": [TEXTS[0]], "raw_scores": True}).json()[0]
    logits = miniberts.load(classifier, "cpu").predict_tokens(*WordPieceTokenizer(BUILTIN_VOCAB).encode(TEXTS[:1]),
                                                             PredictConfig(dtype="fp32", backend="torch"))
    assert all(abs(a["score"] - logits[0, LABELS.index(a["label"])].item()) < 1e-5 for a in raw)
    pairs = clf_client.post("/predict", json={"inputs": [[TEXTS[0], TEXTS[1]], [TEXTS[2], TEXTS[3]]]}).json()
    expected = miniberts.load(classifier, "cpu").predict(TEXTS[::2], TEXTS[1::2], dtype="fp32", backend="torch")
    assert [p[0]["label"] for p in pairs] == [e["label"] for e in expected]


def test_predict_cuts_inputs_as_miniberts_predict_does(clf_client, classifier):
    """/predict runs inputs at `miniberts predict`'s length (its default --max-length), not the model's positions:
    a long review gets the label and probabilities that command writes for it."""
    length = PredictConfig().max_length
    long = " ".join(TEXTS) * 8
    assert len(WordPieceTokenizer(BUILTIN_VOCAB).encode([long], None, 512)[0][0]) > 2 * length
    answer = clf_client.post("/predict", json={"inputs": long}).json()
    expected = miniberts.load(classifier, "cpu").predict([long], dtype="fp32", backend="torch")[0]
    assert all(abs(a["score"] - expected["probabilities"][a["label"]]) < 1e-5 for a in answer)
    refused = clf_client.post("/predict", json={"inputs": long, "truncate": False})
    assert refused.status_code == 422 and f"the model's {length} tokens" in refused.json()["error"]
    assert clf_client.get("/info").json()["max_predict_length"] == length


def test_regressor_answers_its_score(tmp_path):
    torch.manual_seed(1)
    cfg = BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, regression=True)
    path = save_hf(BertForSequenceClassification(cfg), WordPieceTokenizer(BUILTIN_VOCAB), tmp_path / "reg")
    with TestClient(create_app(started(path))) as client:
        answer = client.post("/predict", json={"inputs": TEXTS}).json()
    expected = miniberts.load(path, "cpu").predict(TEXTS, dtype="fp32", backend="torch")
    assert [a[0]["label"] for a in answer] == ["score"] * 4
    assert np.abs(np.array([a[0]["score"] for a in answer]) - expected).max() < 1e-5


def test_tokenize_and_health_and_metrics(tiny_client):
    client, _ = tiny_client
    tokens = client.post("/tokenize", json={"inputs": "Hello world"}).json()
    assert [(t["id"], t["text"], t["special"], t["start"], t["stop"]) for t in tokens[0]] == [
        (101, "[CLS]", True, None, None), (7592, "hello", False, 0, 5), (2088, "world", False, 6, 11),
        (102, "[SEP]", True, None, None)]
    bare = client.post("/tokenize", json={"inputs": ["Hello"], "add_special_tokens": False}).json()
    assert [t["text"] for t in bare[0]] == ["hello"]
    assert client.get("/health").json() == {"status": "ok"}
    client.post("/embed", json={"inputs": "x"})
    metrics = client.get("/metrics").text
    assert 'miniberts_requests_total{route="/embed",status="200"}' in metrics
    assert "miniberts_batch_tokens_bucket" in metrics and "miniberts_queue_duration_seconds_count" in metrics


ERRORS = [  # (route, body, status, error_type, words of the message)
    ("/embed", b'{"inputs": ', 400, "malformed", "not valid JSON"),
    ("/embed", b'["x"]', 400, "malformed", "must be a JSON object"),
    ("/embed", json.dumps({"inputs": "x" * 3000}).encode(), 413, "payload_too_large", "--payload-limit 2000"),
    ("/embed", json.dumps({"inputs": ["x"] * 5}).encode(), 413, "validation", "--max-client-batch-size 4"),
    ("/embed", b'{"inputs": 3}', 422, "validation", "a string or a list of strings"),
    ("/embed", b'{"inputs": ["a", 3]}', 422, "validation", "a string or a list of strings"),
    ("/embed", b'{"text": "a"}', 422, "validation", "no 'inputs' field"),
    ("/embed", b'{"inputs": []}', 422, "empty", "is empty"),
    ("/embed", b'{"inputs": ["a", " "]}', 422, "empty", "input 1 is an empty string"),
    ("/embed", b'{"inputs": "a", "normalize": "yes"}', 422, "validation", "'normalize' must be true or false"),
    ("/embed", json.dumps({"inputs": ["ok", "a " * 600], "truncate": False}).encode(), 422, "validation",
     "input 1 is longer than the model's 512 tokens"),
    ("/predict", b'{"inputs": "a"}', 422, "validation", "no classification/regression head"),
    ("/predict", b'{"inputs": [["a", "b"], ["c"]]}', 422, "validation", "mixes single texts and pairs"),
    ("/v1/embeddings", b'{"input": "a", "encoding_format": "hex"}', 422, "validation", "float, base64"),
    ("/embed", b'{"inputs": "a", "truncation_direction": "Middle"}', 422, "validation",
     "'truncation_direction' must be one of Right, Left, right, left, got 'Middle'"),
    ("/embed", b'{"inputs": "a", "prompt_name": "query"}', 422, "validation",
     "prompt 'query' is not one of"),
    ("/tokenize", b'{"inputs": "a", "prompt_name": "query"}', 422, "validation", "prompts: none"),
    ("/tokenize", b'{"inputs": "a", "prompt_name": 3}', 422, "validation", "'prompt_name' must be a string or null"),
    ("/nowhere", b"{}", 404, "not_found", "Not Found"),
]


@pytest.mark.parametrize("route, body, status, error_type, words", ERRORS, ids=[f"{e[2]}-{e[4]}" for e in ERRORS])
def test_errors_are_json_and_the_server_stays_healthy(tiny_client, route, body, status, error_type, words):
    client, _ = tiny_client
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["error_type"] == error_type and words in r.json()["error"], r.text
    assert client.get("/health").status_code == 200
    assert len(client.post("/embed", json={"inputs": ["still", "answers"]}).json()) == 2


def test_truncate_true_cuts_long_inputs(tiny_client):
    client, _ = tiny_client
    vectors = client.post("/embed", json={"inputs": ["a " * 600], "truncate": True}).json()
    assert np.array(vectors).shape == (1, 32)


def test_truncation_direction_left_cuts_the_beginning(tiny_client):
    """text-embeddings-inference's truncation_direction: two texts that differ only in their first 50 words, beyond
    the model's 512 tokens from the end, embed alike when cut on the left ("Left", as huggingface_hub sends it) and
    apart when cut on the right (the default)."""
    client, _ = tiny_client
    texts = ["alpha " * 50 + "a " * 600, "beta " * 50 + "a " * 600]  # within the fixture's 2,000-byte bodies
    left = np.array([client.post("/embed", json={"inputs": t, "truncation_direction": "Left"}).json()[0]
                     for t in texts])
    right = np.array([client.post("/embed", json={"inputs": t}).json()[0] for t in texts])
    assert np.abs(left[0] - left[1]).max() < 1e-6 and np.abs(right[0] - right[1]).max() > 1e-3


def test_prompts_go_before_each_input_as_sentence_transformers_puts_them(tiny, tmp_path):
    """A sentence-transformers directory's prompts (config_sentence_transformers.json): `prompt_name` puts one
    before each input, and without it the default one (default_prompt_name) goes there, as
    SentenceTransformer.encode does (1e-5 against it); a new export keeps both."""
    st = pytest.importorskip("sentence_transformers")
    from miniberts.inference.st_export import export_sentence_transformers
    from miniberts.sbert import read_layout
    st_dir = export_sentence_transformers(tiny, tmp_path / "st")
    config = st_dir / "config_sentence_transformers.json"
    prompts = {"query": "query: ", "passage": "passage: "}
    config.write_text(json.dumps({**json.loads(config.read_text()), "prompts": prompts,
                                  "default_prompt_name": "passage"}))
    texts = ["a cat", "Dogs!"]
    reference = st.SentenceTransformer(str(st_dir), device="cpu")
    with TestClient(create_app(started(str(st_dir)))) as client:
        named = np.array(client.post("/embed", json={"inputs": texts, "prompt_name": "query"}).json())
        default = np.array(client.post("/embed", json={"inputs": texts}).json())
        tokens = client.post("/tokenize", json={"inputs": "a cat", "prompt_name": "query"}).json()
        other = client.post("/embed", json={"inputs": "a cat", "prompt_name": "title"})
    assert np.abs(named - reference.encode(texts, prompt_name="query", normalize_embeddings=True)).max() < 1e-5
    assert np.abs(default - reference.encode(texts, normalize_embeddings=True)).max() < 1e-5
    assert np.abs(default - reference.encode(["passage: a cat", "passage: Dogs!"], prompt="",
                                             normalize_embeddings=True)).max() < 1e-5
    assert np.abs(named - default).max() > 1e-3
    assert [t["text"] for t in tokens[0]][1:3] == ["query", ":"]
    assert other.status_code == 422 and "prompts: 'query', 'passage'" in other.json()["error"]
    assert np.abs(miniberts.load(str(st_dir), "cpu").embed(texts, dtype="fp32", backend="torch", normalize=True)
                  - default).max() < 1e-5  # Model.embed puts the default prompt there too
    again = read_layout(export_sentence_transformers(st_dir, tmp_path / "again"))
    assert again.prompts == prompts and again.default_prompt_name == "passage"


def test_api_key(tiny):
    with TestClient(create_app(started(tiny, api_key="s3cret"))) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            r = client.post("/embed", json={"inputs": "x"}, headers=headers)
            assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
            assert client.get("/info", headers=headers).status_code == 401
        assert client.post("/embed", json={"inputs": "x"}, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


def gate(service: Service) -> threading.Event:
    """Hold the model thread at its next batch until the returned event is set."""
    release, compute = threading.Event(), service.batcher.compute

    def held(*args):
        release.wait(30)
        return compute(*args)

    service.batcher.compute = held
    return release


def test_flood_gets_429_at_once_and_admitted_requests_are_answered(tiny):
    service = started(tiny, max_concurrent_requests=3)
    app = create_app(service)

    async def flood():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            release = gate(service)
            first = asyncio.create_task(client.post("/embed", json={"inputs": ["a", "b"]}))
            while service.batcher.waiting < 2:
                await asyncio.sleep(0.01)
            refused = [await client.post("/embed", json={"inputs": ["c", "d"]}) for _ in range(5)]
            single = asyncio.create_task(client.post("/embed", json={"inputs": "e"}))  # fits: 2 + 1 <= 3
            while service.batcher.waiting < 3:
                await asyncio.sleep(0.01)
            release.set()
            return refused, await first, await single, (await client.get("/metrics")).text

    refused, first, single, metrics = asyncio.run(flood())
    assert {r.status_code for r in refused} == {429} and {r.headers["retry-after"] for r in refused} == {"1"}
    assert refused[0].json()["error_type"] == "overloaded" and "--max-concurrent-requests 3" in refused[0].json()["error"]
    assert first.status_code == 200 and len(first.json()) == 2 and single.status_code == 200
    assert 'miniberts_requests_total{route="/embed",status="429"} 5.0' in metrics
    assert service.batcher.waiting == 0
    service.stop()


def test_a_pass_runs_in_the_planned_forwards(tiny, monkeypatch):
    """One long text must not pad a whole pass: the pass's rows run in the forwards `forwards.plan` finds cheapest
    under the server's cost model, of similar lengths and widths rounded to WIDTH_STEP, and the vectors equal
    Model.embed's."""
    texts = [("word " * n).strip() for n in (3, 60, 5, 2, 40, 7, 1, 9, 30, 4, 6, 8, 50, 2, 3, 11, 5, 70, 2, 6)]
    shapes = []
    pad_batch = WordPieceTokenizer.pad_batch

    def recorded(self, ids, types, width=0):
        out = pad_batch(self, ids, types, width)
        shapes.append(tuple(out["input_ids"].shape))
        return out

    monkeypatch.setattr(WordPieceTokenizer, "pad_batch", recorded)
    service = started(tiny, pack=False)  # padded forwards only (packed passes: tests/test_packing.py)
    service.forward_cost = cost = ForwardCost(64.0, 1.0, 0.0)  # as if measured: a forward costs 64 padded tokens
    ids, types = service.model.embedding_tokens(texts, 512)
    with TestClient(create_app(service)) as client:
        shapes.clear()  # after start-up's warm-up and measurement
        out = service.batcher.compute(("embed", False), ids, types)
        vectors = np.array(client.post("/embed", json={"inputs": texts, "normalize": False}).json())
    planned = [(len(rows), width) for rows, width in plan([len(x) for x in ids], cost, 512)]
    assert shapes == planned + planned  # the pass, then the request's
    assert 1 < len(planned) < len(texts) and all(width % WIDTH_STEP == 0 for _, width in planned)
    assert planned[0][1] == 80 and planned[-1][1] == 16  # the 72-token text pads its neighbours, not the 3-token ones
    expected = miniberts.load(tiny, "cpu").embed(texts, dtype="fp32", backend="torch")
    assert np.abs(np.asarray(out) - expected).max() < 1e-5 and np.abs(vectors - expected).max() < 1e-5
    service.stop()


def test_auto_is_resolved_once_for_rows_and_for_one_input(tiny):
    """--backend auto is resolved at start-up, for forwards of PICK_ROWS rows and for passes of one input; only
    those engines load (one when the two picks agree), and /info names them."""
    model = miniberts.load(tiny, "cpu")
    service = Service(ServeConfig(), tiny, model)
    service.start()  # the warm-up runs passes of 1 and 32 inputs
    try:
        info = service.info()
        assert {name for _, name, _ in model._runners} == {service.backend, service.backend_one}
        assert (info["backend"], info["backend_one_input"]) == (service.backend, service.backend_one)
        assert "auto" not in (service.backend, service.backend_one)
    finally:
        service.stop()


def test_a_failing_batch_fails_its_requests_not_the_server(tiny_client):
    client, service = tiny_client
    compute = service.batcher.compute

    def broken(*args):
        raise RuntimeError("out of memory")

    service.batcher.compute = broken
    try:
        r = client.post("/embed", json={"inputs": "x"})
    finally:
        service.batcher.compute = compute
    assert r.status_code == 500 and r.json() == {"error": "RuntimeError: out of memory", "error_type": "backend"}
    assert client.get("/health").status_code == 200 and client.post("/embed", json={"inputs": "x"}).status_code == 200


def test_draining_answers_503(tiny):
    service = started(tiny)
    with TestClient(create_app(service)) as client:
        assert "retry-after" not in client.post("/embed", json={"inputs": ""}).headers  # a 422: only 429 and 503 ask
        service.state = "draining"
        r = client.get("/health")
        assert r.status_code == 503 and r.json() == {"error": "the server is draining", "error_type": "unhealthy"}
        posted = client.post("/embed", json={"inputs": "x"})
        assert posted.status_code == 503 and r.headers["retry-after"] == posted.headers["retry-after"] == "5"


def test_a_stuck_model_thread_makes_health_503(tiny_client):
    client, service = tiny_client
    service.batcher.busy_since = time.monotonic() - STALL_SECONDS - 1  # a pass "running" for over a minute
    try:
        r = client.get("/health")
    finally:
        service.batcher.busy_since = None
    assert r.status_code == 503 and "the model thread is stuck or dead" in r.json()["error"]
    assert client.get("/health").status_code == 200


def test_start_freezes_what_it_loaded_and_stop_releases_it(tiny):
    """What a server holds to the end is out of the cyclic collector's sight while it serves (a full collection walked
    it all, pausing every request); what requests leave behind is still collected; stop hands it all back."""
    gc.unfreeze()
    service = started(tiny)
    try:
        assert gc.get_freeze_count() > 10_000  # torch, the model, the tokenizer, the web stack
        cycle = []
        cycle.append(cycle)  # garbage of a request: a reference cycle made after start-up
        del cycle
        assert gc.collect() >= 1
    finally:
        service.stop()
    assert gc.get_freeze_count() == 0


def test_batches_fit_the_token_budget_oldest_first_and_skip_gone_clients():
    batches = []
    release = threading.Event()

    def compute(kind, ids, type_ids):
        release.wait(30)
        batches.append((kind, [len(x) for x in ids]))
        return [len(x) for x in ids]

    batcher = Batcher(compute, max_batch_tokens=12, max_waiting=100, metrics=Metrics())
    batcher.start()

    async def drive():
        loop = asyncio.get_running_loop()

        def job(kind, lengths):
            j = Job(kind, [[1] * n for n in lengths], [[0] * n for n in lengths], loop, loop.create_future())
            assert batcher.admit(len(lengths))
            batcher.submit(j)
            return j

        held = job(("embed", True), [2])  # the model thread takes it alone and waits at the gate
        while batcher._queue:
            await asyncio.sleep(0.01)
        a = job(("embed", True), [3, 5, 2, 4])
        gone = job(("embed", True), [1, 1])
        b = job(("predict",), [6])
        c = job(("embed", True), [6, 1])
        gone.cancelled = True
        release.set()
        return [await x.future for x in (held, a, b, c)]

    results = asyncio.run(drive())
    batcher.stop()
    assert results == [[2], [3, 5, 2, 4], [6], [6, 1]]  # each job's results in its input order
    # The embed inputs queued behind the held one: oldest first within 12 padded tokens (a later, shorter input fills
    # a pass that an older, longer one would overflow), each pass longest first; then the predict input. Taken
    # longest first instead, c's 6 would run before a's older 4, 3 and 2.
    assert batches == [(("embed", True), [2]), (("embed", True), [5, 3]), (("embed", True), [4, 2, 1]),
                       (("predict",), [6]), (("embed", True), [6])]
    assert batcher.waiting == 0 and batcher.metrics.dropped._value.get() == 2


def test_batch_budget_below_the_longest_input_is_refused(tiny, capsys):
    assert main(["serve", tiny, "--max-batch-tokens", "500"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"miniberts serve: error: --max-batch-tokens must be at least 512, the longest input of {tiny} "
                   "(tokens with [CLS]/[SEP]), got 500")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_real_process_drops_a_gone_client_and_drains_on_sigterm():
    """A real `miniberts serve` of a random 4-256 (slow enough that work queues): 6 requests of 6 long inputs queue
    behind a budget of two rows per pass; a raw client sends 6 inputs and disconnects (its inputs are dropped,
    uncomputed); SIGTERM then finds requests in flight: each is answered in full and the process exits 0."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "miniberts", "serve", "4-256", "--port", str(port), "--backend", "torch",
                             "--dtype", "fp32", "--max-batch-tokens", "512", "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up():
            try:
                return httpx.get(f"{base}/health").status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                return False

        wait_for(up, "the server to start")
        long_texts = [f"sentence {i} " + "with many words " * 80 for i in range(6)]  # ~250 tokens each
        answers: list = [None] * 6

        def post(i):
            try:
                answers[i] = httpx.post(f"{base}/embed", json={"inputs": long_texts}, timeout=300)
            except httpx.HTTPError as e:
                answers[i] = e

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: metric(base, "miniberts_admitted_inputs_total") == 6 * 6, "all 6 requests to be admitted")
        body = json.dumps({"inputs": long_texts}).encode()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(lambda: metric(base, "miniberts_admitted_inputs_total") == 7 * 6, "the raw client's inputs to queue")
        wait_for(lambda: metric(base, "miniberts_dropped_inputs_total") == 6, "the gone client's inputs to be dropped")
        assert metric(base, "miniberts_inputs_waiting") > 0  # the 6 requests are still in flight
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(300)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for answer in answers:
        assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
        assert np.array(answer.json()).shape == (6, 256)


def test_ray_settings_are_the_flags_checked_alike():
    pytest.importorskip("ray.serve")
    from miniberts.inference.serve.ray_app import serve_config
    from miniberts.settings import SettingsError

    model, replicas, cfg = serve_config({"model": "tiny", "replicas": "2", "max_batch_tokens": "4096", "int8": "true"})
    assert (model, replicas, cfg.max_batch_tokens, cfg.int8) == ("tiny", 2, 4096, True)
    with pytest.raises(MinibertsError, match="unknown setting 'port'"):
        serve_config({"model": "tiny", "port": "1"})
    with pytest.raises(MinibertsError, match="max_batch_tokens must be a whole number, got 'lots'"):
        serve_config({"model": "tiny", "max_batch_tokens": "lots"})
    with pytest.raises(SettingsError, match="--max-concurrent-requests must be at least 1, got 0"):
        serve_config({"model": "tiny", "max_concurrent_requests": "0"})


@pytest.mark.slow
def test_ray_serve_deployment_answers_as_miniberts_serve(tiny):
    """The same app on a local Ray instance, two replicas behind Ray's proxy."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from miniberts.inference.serve.ray_app import build

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"model": tiny, "replicas": "2", "backend": "torch", "dtype": "fp32", "threads": "1"}))
        base = f"http://127.0.0.1:{port}"
        # Ray's proxy picks a replica per request: ten answers of 200 in a row, or one replica may still be loading
        wait_for(lambda: all(httpx.get(f"{base}/health").status_code == 200 for _ in range(10)), "both replicas to load",
                 timeout=300)
        vectors = np.array([httpx.post(f"{base}/embed", json={"inputs": TEXTS}, timeout=60).json() for _ in range(4)])
        r = httpx.post(f"{base}/embed", json={"inputs": []})
    finally:
        serve.shutdown()
        ray.shutdown()
    expected = miniberts.load(tiny, "cpu").embed(TEXTS, normalize=True, dtype="fp32", backend="torch")
    assert np.abs(vectors - expected).max() < 1e-5  # every answer, from either replica
    assert r.status_code == 422 and r.json()["error_type"] == "empty"
