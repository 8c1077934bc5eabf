"""A sentence-transformers directory: how it pools, how long its inputs may be, and whether it L2-normalises.

sentence-transformers saves a model as `modules.json`, the list of its modules in order, each in its own folder:
a Transformer (the BERT directory, often the root itself, with `sentence_bert_config.json` giving max_seq_length),
a Pooling module (`1_Pooling/config.json`: the mode, as one `pooling_mode` or as the older `pooling_mode_*` flags) and
optionally a Normalize module (no files needed); `config_sentence_transformers.json` may name prompts (texts put before
an input: `encode(prompt_name=...)`, a server's `prompt_name`). Reading them lets `embed(pooling="auto")` give what
`SentenceTransformer(dir).encode()` gives. Reference: sentence_transformers/sentence_transformer/modules/pooling.py
and base/modules/normalize.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError
from .fileio import atomic_write_text

# sentence-transformers' mode -> ours. Its "cls" is the raw [CLS] hidden state, as ours is (BERT's tanh pooler is ours
# "pooler", which sentence-transformers never uses).
MODES = {"cls": "cls", "mean": "mean"}
LEGACY_FLAGS = {  # the boolean keys of configs saved before sentence-transformers 5 -> the mode each turns on
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass
class SentenceLayout:
    """What a sentence-transformers directory says about embedding with it."""

    model_dir: Path  # the Transformer module's folder: config.json, weights, vocab.txt
    pooling: str  # one of MODES' values
    normalize: bool
    max_length: int | None  # max_seq_length, when the directory states one
    lowercase: bool = False  # do_lower_case: sentence-transformers lower-cases the texts before its tokenizer
    prompts: dict[str, str] = field(default_factory=dict)  # name -> the text put before an input given that name
    default_prompt_name: str | None = None  # the prompt sentence-transformers puts before every input unless told


def read_layout(directory: str | Path) -> SentenceLayout | None:
    """The layout of a sentence-transformers directory; None when `directory` has no modules.json (not one)."""
    directory = Path(directory)
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules):
        raise CheckpointError(f"{modules_path}: expected a JSON list of modules, each with a \"type\" and a \"path\"")
    custom = [m["type"] for m in modules if not m["type"].startswith("sentence_transformers.")]
    if custom:  # a module class of the model's own: code that came with it, which we never run
        raise CheckpointError(f"{modules_path}: module {custom[0]!r} is custom code, not sentence-transformers' own; "
                              "refused: miniberts never runs code that came with a model")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise CheckpointError(f"{modules_path}: modules {kinds} are not supported (expected Transformer, Pooling and "
                              "optionally Normalize)")
    model_dir = directory / modules[0].get("path", "")
    max_length, lowercase = _transformer_settings(model_dir / "sentence_bert_config.json")
    return SentenceLayout(model_dir, _pooling_mode(directory / modules[1].get("path", "") / "config.json"),
                          normalize=len(kinds) > 2, max_length=max_length, lowercase=lowercase,
                          **_prompts(directory / "config_sentence_transformers.json"))


def write_layout(layout: SentenceLayout, out_dir: str | Path, hidden_size: int) -> None:
    """The sentence-transformers files beside a saved Hugging Face layout (the Transformer is the directory itself),
    so the copy embeds as the original did, here and in `SentenceTransformer(out_dir)`. The Pooling config uses the
    boolean flags, which every sentence-transformers version reads."""
    out_dir = Path(out_dir)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if layout.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    atomic_write_text(out_dir / "modules.json", json.dumps(modules, indent=2))
    flags = {key: layout.pooling == mode for key, mode in LEGACY_FLAGS.items()}
    atomic_write_text(out_dir / "1_Pooling" / "config.json",
                      json.dumps({"word_embedding_dimension": hidden_size, **flags}, indent=2))
    if layout.max_length is not None or layout.lowercase:
        atomic_write_text(out_dir / "sentence_bert_config.json",
                          json.dumps({"max_seq_length": layout.max_length, "do_lower_case": layout.lowercase}, indent=2))


def _pooling_mode(path: Path) -> str:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (the Pooling module's config, listed in modules.json)")
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object with \"pooling_mode\"")
    if "pooling_mode" in raw:
        modes = raw["pooling_mode"] if isinstance(raw["pooling_mode"], list) else [raw["pooling_mode"]]
    else:  # no mode stated means mean pooling, as sentence-transformers reads it
        modes = [mode for key, mode in LEGACY_FLAGS.items() if raw.get(key) is True] or ["mean"]
    if len(modes) != 1 or modes[0] not in MODES:
        found = ", ".join(map(repr, modes)) or "none"
        raise CheckpointError(f"{path}: pooling mode {found} is not supported (expected exactly one of "
                              f"{', '.join(map(repr, MODES))})")
    return MODES[modes[0]]


def _transformer_settings(path: Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) of the Transformer module; the file is optional."""
    if not path.is_file():
        return None, False
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object with \"max_seq_length\"")
    value, lowercase = raw.get("max_seq_length"), raw.get("do_lower_case", False)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise CheckpointError(f"{path}: max_seq_length must be a positive whole number, got {value!r}")
    if not isinstance(lowercase, bool):
        raise CheckpointError(f"{path}: do_lower_case must be true or false, got {lowercase!r}")
    return value, lowercase


def _prompts(path: Path) -> dict:
    """The named prompts of config_sentence_transformers.json and the default one's name (optional file and keys),
    as SentenceLayout's fields."""
    raw = _read_json(path) if path.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    prompts, default = raw.get("prompts") or {}, raw.get("default_prompt_name")
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise CheckpointError(f"{path}: \"prompts\" must be an object of names to texts, got {prompts!r}")
    if default is not None and default not in prompts:
        raise CheckpointError(f"{path}: default_prompt_name {default!r} is not one of its prompts "
                              f"({', '.join(map(repr, prompts)) or 'none'})")
    return {"prompts": prompts, "default_prompt_name": default}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
