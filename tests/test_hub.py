"""Models by Hugging Face Hub id, with no network ever: a Hugging Face cache is built in a temporary folder in the
exact layout of a released google repo (blobs, refs/main, snapshots/<commit>, a .no_exist marker), and every socket
connection raises. Also: pinned release revisions, `miniberts download`, remote code and NaN weights refused, the
model card."""

import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import miniberts
from miniberts import hub
from miniberts.bench.harness import BenchConfig, size_key
from miniberts.checkpoint import read_checkpoint, to_hf
from miniberts.cli import main
from miniberts.config import PRESETS, BertConfig
from miniberts.errors import CheckpointError, MinibertsError
from miniberts.model import BertForPreTraining
from miniberts.tokenizer import BUILTIN_VOCAB

hf_constants = pytest.importorskip("huggingface_hub.constants")

REPO = "google/bert_uncased_L-2_H-128_A-2"
MAIN = PRESETS["2-128"].revision  # the pinned commit is what `main` points to in this cache
OTHER = "1" * 40  # a second commit: other weights, reachable only as REPO@OTHER
# config.json as the google repos hold it: no model_type, no architectures.
GOOGLE_CONFIG = {"hidden_size": 128, "hidden_act": "gelu", "initializer_range": 0.02, "vocab_size": 30522,
                 "hidden_dropout_prob": 0.1, "num_attention_heads": 2, "type_vocab_size": 2,
                 "max_position_embeddings": 512, "num_hidden_layers": 2, "intermediate_size": 512,
                 "attention_probs_dropout_prob": 0.1}
TEXTS = ["a wonderful, moving film", "a dull, boring mess"]


def google_bin(seed: int) -> bytes:
    """A random Tiny as the repos' pytorch_model.bin: a pickled BertForPreTraining state dict with HF names."""
    torch.manual_seed(seed)
    model = BertForPreTraining(PRESETS["2-128"].config(), nsp=True)
    state = to_hf(model.state_dict(), 2)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # tied, as HF saves
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"google-{seed}-{os.getpid()}.bin"
    torch.save(state, path)
    data = path.read_bytes()
    path.unlink()
    return data


def add_commit(cache: Path, commit: str, files: dict[str, bytes], ref: str | None = None) -> Path:
    """One commit of the repo in huggingface_hub's cache layout: files as blobs, linked from snapshots/<commit>."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    (repo / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
    (repo / ".no_exist" / commit / "model.safetensors").write_bytes(b"")  # the Hub said: no such file
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snap


def repo_files(seed: int, config: dict = GOOGLE_CONFIG) -> dict[str, bytes]:
    return {"config.json": json.dumps(config).encode(), "vocab.txt": BUILTIN_VOCAB.read_bytes(),
            "pytorch_model.bin": google_bin(seed)}


@pytest.fixture(scope="module")
def google_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-cache")
    add_commit(cache, MAIN, repo_files(0), ref="main")
    add_commit(cache, OTHER, repo_files(1))
    return cache


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def cache(google_cache, monkeypatch):
    """The google cache as huggingface_hub's cache, offline (constants are read at import: patched, and the
    environment set for child processes)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(google_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(google_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return google_cache


def plain_copy(snapshot: Path, out: Path) -> Path:
    """The same files as an ordinary directory (links followed)."""
    out.mkdir()
    for f in snapshot.iterdir():
        shutil.copyfile(f, out / f.name)
    return out


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- loading by id ------------------------------------------------------------------------------------------------

def test_load_by_id_equals_the_directory(cache, tmp_path):
    snap = cache / f"models--google--bert_uncased_L-2_H-128_A-2/snapshots/{MAIN}"
    by_id = miniberts.load(REPO, device="cpu")
    by_dir = miniberts.load(plain_copy(snap, tmp_path / "tiny"), device="cpu")
    for (name, a), (_, b) in zip(by_id.module.state_dict().items(), by_dir.module.state_dict().items()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(by_id.embed(TEXTS, dtype="fp32", backend="torch"),
                                  by_dir.embed(TEXTS, dtype="fp32", backend="torch"))
    released = miniberts.load("released:tiny", device="cpu")  # the pinned commit, which main points to here
    assert torch.equal(released.encoder.embeddings.word.weight, by_id.encoder.embeddings.word.weight)


def test_same_numbers_as_transformers_on_the_same_cache(cache):
    transformers = pytest.importorskip("transformers")
    ours = miniberts.load(REPO, device="cpu")
    theirs = transformers.BertModel.from_pretrained(REPO, local_files_only=True, cache_dir=str(cache)).eval()
    enc = transformers.BertTokenizer(str(BUILTIN_VOCAB), do_lower_case=True)(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**enc).last_hidden_state
        got, _ = ours.encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_revision_and_released_alias(cache):
    main_rev = read_checkpoint(REPO)
    other = read_checkpoint(f"{REPO}@{OTHER}")
    pinned = read_checkpoint("released:2/128")
    word = "bert.embeddings.word.weight"
    assert torch.equal(main_rev.state[word], pinned.state[word])
    assert not torch.equal(main_rev.state[word], other.state[word])
    assert Path(other.source).name == OTHER
    assert miniberts.load("tiny").encoder.embeddings.word.weight.shape[1] == 128  # a preset stays a random init
    assert hub.parse("tiny") is None and hub.parse("2/128") is None and hub.parse("runs/x@") is None
    assert hub.parse(f"{REPO}@refs/pr/1") == hub.HubRef(REPO, "refs/pr/1")  # a PR only when asked for by name


def test_a_local_path_wins_over_an_id(cache, tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny, tmp_path / REPO)
    assert miniberts.load(REPO).config.hidden_size == 32  # the directory, not the cached repo (H=128)


def test_embed_convert_by_id_equal_the_directory(cache, tmp_path, capsys):
    snap = plain_copy(cache / f"models--google--bert_uncased_L-2_H-128_A-2/snapshots/{MAIN}", tmp_path / "dir")
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    for name, model in (("id", REPO), ("dir", snap)):
        assert cli(capsys, "embed", model, tmp_path / "in.txt", "--output", tmp_path / f"{name}.npy", "--dtype",
                   "fp32", "--backend", "torch")[0] == 0
        assert cli(capsys, "convert", model, tmp_path / f"conv-{name}")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "id.npy"), np.load(tmp_path / "dir.npy"))
    a, b = load_file(tmp_path / "conv-id/model.safetensors"), load_file(tmp_path / "conv-dir/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = front_matter(tmp_path / "conv-id/README.md")
    assert card["base_model"] == [REPO] and card["library_name"] == "miniberts"
    saved = front_matter(miniberts.load(REPO).save(tmp_path / "saved-id") / "README.md")
    assert saved["base_model"] == [REPO]  # Model.save names the id it was loaded by


def test_finetune_and_distill_by_id_equal_the_directory(cache, tmp_path):
    snap = plain_copy(cache / f"models--google--bert_uncased_L-2_H-128_A-2/snapshots/{MAIN}", tmp_path / "dir")
    rows = [(t, "pos") for t in ("great film", "loved it", "superb cast")] + \
           [(t, "neg") for t in ("dull mess", "hated it", "awful cast")]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
    settings = dict(train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "train.tsv"), text_column="sentence",
                    label_column="label", batch_size=6, epochs=1, lr=1e-3, max_length=16, progress=False)
    by_id = miniberts.finetune(model=REPO, out=str(tmp_path / "ft-id"), **settings)
    by_dir = miniberts.finetune(model=str(snap), out=str(tmp_path / "ft-dir"), **settings)
    assert by_id["best"] == by_dir["best"]
    identity = json.loads((tmp_path / "ft-id/identity.json").read_text())
    assert identity["identity"]["model"] == f"{REPO}@{MAIN}"  # the resolved commit, not just the id
    card = front_matter(tmp_path / "ft-id/README.md")
    assert card["base_model"] == [REPO] and card["pipeline_tag"] == "text-classification"
    assert "## Results" in (tmp_path / "ft-id/README.md").read_text()

    transfer = tmp_path / "transfer.txt"
    transfer.write_text("a fine film\nboring and dull\n")
    distill = dict(settings, teacher=str(tmp_path / "ft-dir"), transfer=[str(transfer)])
    d_id = miniberts.distill(student=REPO, out=str(tmp_path / "d-id"), **distill)
    d_dir = miniberts.distill(student=str(snap), out=str(tmp_path / "d-dir"), **distill)
    assert d_id["best"] == d_dir["best"]
    assert front_matter(tmp_path / "d-id/README.md")["base_model"] == [REPO]


# --- offline and failures: one line each ------------------------------------------------------------------------

def one_line_error(capsys, *argv) -> str:
    code, _, err = cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_offline_errors_are_one_line(cache, tmp_path, capsys):
    err = one_line_error(capsys, "embed", "google/bert_uncased_L-4_H-256_A-4", tmp_path / "in.txt", "--output",
                         tmp_path / "o.npy")
    assert "not in the Hugging Face cache at" in err and str(cache) in err
    assert "miniberts download google/bert_uncased_L-4_H-256_A-4" in err
    err = one_line_error(capsys, "convert", f"{REPO}@v9", tmp_path / "out")
    assert f"{REPO}@v9: no such local directory, and not in the Hugging Face cache" in err
    assert "released:NAME takes a preset name" in one_line_error(capsys, "convert", "released:huge", tmp_path / "o")


def test_half_downloaded_snapshot_is_one_line(tmp_path, capsys, monkeypatch):
    half = tmp_path / "half"
    snap = add_commit(half, MAIN, repo_files(0), ref="main")
    blob = (snap / "pytorch_model.bin").resolve()
    blob.unlink()  # the download stopped before the weights' blob was complete
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(half))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    err = one_line_error(capsys, "convert", REPO, tmp_path / "out")
    assert "has no weights" in err and f"miniberts download {REPO}" in err


def test_hub_errors_are_one_line(cache, monkeypatch, capsys, tmp_path):
    import huggingface_hub
    from huggingface_hub import errors
    httpx = pytest.importorskip("httpx")

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for error, message in ((errors.GatedRepoError, "a gated repository"),
                           (errors.RepositoryNotFoundError, "no such model repository on the Hub"),
                           (errors.RevisionNotFoundError, "has no revision 'nope'")):
        def fail(*args, error=error, **kwargs):
            raise error("from the Hub", response=httpx.Response(404, request=httpx.Request("GET", "https://hub")))
        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        assert message in one_line_error(capsys, "convert", "someone/model@nope", tmp_path / "o")


def test_without_huggingface_hub_one_line_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    err = one_line_error(capsys, "convert", "someone/else", tmp_path / "o")
    assert "someone/else: no such local directory" in err and "pip install 'miniberts[hub]'" in err


# --- safe loading --------------------------------------------------------------------------------------------------

def test_remote_code_is_refused(tmp_path, tiny):
    model = shutil.copytree(tiny, tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json: asks for remote code \(auto_map\); refused"):
        miniberts.load(model)


def test_nan_weights_are_refused_naming_the_tensor(tmp_path, tiny):
    model = shutil.copytree(tiny, tmp_path / "m")
    state = load_file(model / "model.safetensors")
    state["encoder.layer.1.output.dense.weight"][0, 0] = float("nan")
    from safetensors.torch import save_file
    save_file(state, str(model / "model.safetensors"))
    with pytest.raises(CheckpointError, match="tensor encoder.layer.1.output.dense.weight holds NaN or infinite"):
        miniberts.load(model)


# --- the release table, `models`, `download` ------------------------------------------------------------------

def test_pinned_revisions_are_commit_hashes():
    pinned = [p.revision for p in PRESETS.values() if p.revision is not None]
    assert pinned and all(re.fullmatch(r"[0-9a-f]{40}", r) for r in pinned)
    assert {p.repo_id for p in PRESETS.values()} == {
        f"google/bert_uncased_L-{l}_H-{h}_A-{h // 64}" for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)}


def test_models_json_names_repo_and_revision(capsys):
    rows = {r["name"]: r for r in json.loads(cli(capsys, "models", "--json")[1])}
    assert rows["2-128"]["repo"] == REPO and rows["2-128"]["revision"] == MAIN
    assert rows["2-128"]["released"] == "released:2-128"


def test_download_out_writes_a_self_contained_directory(cache, tmp_path, capsys):
    code, out, _ = cli(capsys, "download", "tiny", "--out", tmp_path / "models")
    assert code == 0 and out.startswith(f"{REPO}@{MAIN}\t")
    copy = tmp_path / "models/bert_uncased_L-2_H-128_A-2"
    assert not any(p.is_symlink() for p in copy.iterdir())
    assert json.loads((copy / "source.json").read_text())["commit"] == MAIN
    assert torch.equal(read_checkpoint(copy).state["bert.embeddings.word.weight"],
                       read_checkpoint(REPO).state["bert.embeddings.word.weight"])
    assert "name at least one model" in one_line_error(capsys, "download")


def test_bench_takes_a_hub_id_or_a_model_directory(cache, tiny):
    """`bench --models` runs the engine section on real weights given by id or directory, sized by their config."""
    cfg = BenchConfig.make(models=[REPO, tiny, "tiny"])
    assert cfg.engine_models == [REPO, tiny, "2-128"] and cfg.models == ["2-128"]  # real weights: engines only
    assert size_key(REPO) == "2-128" and size_key(tiny) == "2-32" and size_key("minilm") == "6-384"
    with pytest.raises(MinibertsError, match="neither a size .* a model directory nor a Hub id"):
        BenchConfig.make(models=["no-such-model"])


# --- the model card ---------------------------------------------------------------------------------------------------

def front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    block = text.split("---\n")[1]
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(block)


def test_every_saved_model_has_a_card(tmp_path, tiny):
    out = miniberts.load(tiny).save(tmp_path / "saved")
    card = front_matter(out / "README.md")
    assert card["library_name"] == "miniberts" and card["pipeline_tag"] == "feature-extraction"
    assert card["license"] == "apache-2.0" and "base_model" not in card  # a local directory names no Hub model
    BertConfig.from_hf_json(out / "config.json")  # the card did not disturb the model files


def test_no_network_without_offline_flag_loads_from_the_cache(cache, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # the Hub is tried, every connection fails
    assert read_checkpoint(REPO).config.hidden_size == 128


def test_online_fetches_only_what_the_loaders_read(cache, monkeypatch):
    """The Hub (faked: its listing of a google repo) is asked once for the commit of main; then the small files and
    the .bin alone are fetched at that commit: never Flax, never the TF checkpoint beside a .bin."""
    import huggingface_hub
    from types import SimpleNamespace

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    listed = ["config.json", "vocab.txt", "pytorch_model.bin", "flax_model.msgpack", "bert_model.ckpt.index",
              "bert_model.ckpt.data-00000-of-00001", "README.md"]
    info = SimpleNamespace(sha=MAIN, siblings=[SimpleNamespace(rfilename=f) for f in listed])
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: info)
    asked = []

    def fake_snapshot_download(repo, revision=None, allow_patterns=(), **kw):
        fetched = huggingface_hub.utils.filter_repo_objects(listed, allow_patterns=allow_patterns)
        asked.append((revision, sorted(fetched)))
        return str(cache / f"models--google--bert_uncased_L-2_H-128_A-2/snapshots/{MAIN}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert read_checkpoint(f"{REPO}@main").config.num_layers == 2
    assert asked == [(MAIN, ["config.json", "vocab.txt"]), (MAIN, ["pytorch_model.bin"])]


def test_a_custom_sentence_transformers_module_is_refused(tmp_path, tiny):
    model = shutil.copytree(tiny, tmp_path / "st")
    (model / "modules.json").write_text(json.dumps([{"path": "", "type": "my_package.EvilTransformer"},
                                                    {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    with pytest.raises(CheckpointError, match="module 'my_package.EvilTransformer' is custom code"):
        miniberts.load(model)


def test_offline_from_the_environment_in_a_fresh_process(cache, tmp_path):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE as a user sets them (huggingface_hub reads them at import)."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    ok = subprocess.run([sys.executable, "-m", "miniberts", "convert", "released:tiny", str(tmp_path / "out")],
                        env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert front_matter(tmp_path / "out/README.md")["base_model"] == [REPO]
    missing = subprocess.run([sys.executable, "-m", "miniberts", "convert", "google/bert_uncased_L-4_H-256_A-4",
                              str(tmp_path / "out2")], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert f"not in the Hugging Face cache at {cache}" in missing.stderr and "(offline)" in missing.stderr


def test_experiment_plans_a_student_given_by_id(cache, tmp_path):
    from miniberts.train import experiment

    rows = "".join(f"{t}\t{l}\n" for t, l in (("great film", "pos"), ("dull mess", "neg")) * 4)
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    cfg = experiment.ExperimentConfig(out=str(tmp_path / "exp"), students=[REPO], strategies=["scratch-ft", "pt-ft"],
                                      seeds=1, train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "dev.tsv"),
                                      test=str(tmp_path / "test.tsv"), text_column="sentence", label_column="label")
    cells = {j.cell.strategy: j for j in experiment.plan(cfg).jobs if j.cell is not None}
    assert {j.cell.student for j in cells.values()} == {"google--bert_uncased_L-2_H-128_A-2"}  # a folder name
    assert cells["pt-ft"].settings.model == REPO and cells["pt-ft"].cell.pretrain_on == "given"
    assert cells["scratch-ft"].settings.model == "2-128"  # the released config is the preset's: its random init
