"""The model card: README.md in every saved model directory, in the Hugging Face Hub's format, so that
`hf upload org/name DIR` publishes a complete card and `miniberts.load("org/name")` reads the model back.

A card is YAML front matter (the Hub's metadata: library_name, pipeline_tag, base_model, datasets, metrics, license,
tags) and a body: what the model is, how it was made (recipe, base models, settings) and its measured scores.
The front matter is written by hand, each value a JSON string (a valid YAML scalar), so no YAML library is needed.
Reference: https://huggingface.co/docs/hub/model-cards (the metadata keys), huggingface_hub's ModelCardData.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import BertConfig, param_count
from .fileio import atomic_write_text
from .hub import repo_of

CARD = "README.md"
PIPELINES = {"BertForSequenceClassification": "text-classification", "BertModel": "feature-extraction",
             "BertForMaskedLM": "fill-mask", "BertForPreTraining": "fill-mask"}
HUB_METRICS = {"accuracy": "accuracy", "f1": "f1", "mcc": "matthews_correlation", "pearson": "pearsonr",
               "spearman": "spearmanr"}  # ours -> the Hub's metric ids
GLUE_DATASET = "nyu-mll/glue"
LICENSE = "apache-2.0"  # miniberts' and the released checkpoints' licence; change it if your data asks for another
RECIPES = {"finetune": "fine-tuned", "distill": "distilled from a fine-tuned teacher", "pretrain": "pre-trained",
           "convert": "converted to the Hugging Face layout", "": "saved"}
# metrics.json entries that are records of the run, not scores.
NOT_SCORES = {"epochs", "config", "argv", "versions", "labels", "steps", "seconds", "epoch", "step", "eval_step",
              "eval_curve", "data", "command", "device", "processes", "interrupted", "minutes", "tokens_per_s",
              "train_time_s", "wall_time_s", "tokens_seen", "train_examples", "transfer_examples", "labeled_examples"}


@dataclass
class CardInfo:
    """What a recipe knows about the model it saved; every field may stay empty."""

    recipe: str = ""  # one of RECIPES
    base_models: list[str] = field(default_factory=list)  # what it came from, as given (Hub ids, directories, presets)
    settings: dict = field(default_factory=dict)  # the recipe's settings (its config dataclass as a dict)
    scores: dict = field(default_factory=dict)  # the run's metrics.json
    metrics: list[str] = field(default_factory=list)  # our metric names (accuracy, f1, mcc, pearson, spearman)
    glue: bool = False  # trained on a GLUE task


def write_card(model_dir: str | Path, info: CardInfo | None = None) -> Path:
    """Write model_dir/README.md for the model saved there (its config.json says what it is)."""
    model_dir = Path(model_dir)
    info = info or CardInfo()
    raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    cfg = BertConfig.from_hf_json(model_dir / "config.json")
    arch = (raw.get("architectures") or ["BertModel"])[0]
    path = model_dir / CARD
    atomic_write_text(path, front_matter(info, arch) + body(model_dir.name, info, cfg, arch))
    return path


def front_matter(info: CardInfo, arch: str) -> str:
    hub_bases = sorted({repo for base in info.base_models if (repo := repo_of(base))})
    meta = {
        "library_name": "miniberts",
        "pipeline_tag": PIPELINES.get(arch, "feature-extraction"),
        "license": LICENSE,
        "language": ["en"],
        "tags": ["bert", "miniberts"] + ([info.recipe] if info.recipe else []),
        "base_model": hub_bases,
        "datasets": [GLUE_DATASET] if info.glue else [],
        "metrics": [HUB_METRICS.get(m, m) for m in info.metrics],
    }
    lines = ["---"]
    for key, value in meta.items():
        if isinstance(value, list):
            if value:
                lines += [f"{key}:"] + [f"- {json.dumps(v)}" for v in value]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines + ["---", ""]) + "\n"


def body(name: str, info: CardInfo, cfg: BertConfig, arch: str) -> str:
    made = RECIPES.get(info.recipe, info.recipe)
    lines = [f"# {name}", "",
             f"A BERT miniature ({arch}: L={cfg.num_layers}, H={cfg.hidden_size}, A={cfg.num_heads}, "
             f"{param_count(cfg):,} parameters) {made} with miniberts, the toolkit for the compact BERT models of "
             "Turc et al. (2019), \"Well-Read Students Learn Better\".", ""]
    if cfg.id2label or cfg.regression:
        lines += [f"Output: {'a regression score' if cfg.regression else 'labels ' + ', '.join(cfg.id2label)}.", ""]
    if info.base_models:
        lines += ["## Origin", ""] + [f"- `{base}`" for base in info.base_models] + [""]
    settings = {k: v for k, v in info.settings.items() if v not in ("", None, [], False)}
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v) if isinstance(v, (list, dict)) else v}` |" for k, v in settings.items()]
        lines.append("")
    scores = list(_scores(info.scores))
    if scores:
        lines += ["## Results", "", "| measure | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in scores] + [""]
    lines += ["## Use", "", "```python", "import miniberts", "",
              'model = miniberts.load("ORG/NAME")  # after `hf upload ORG/NAME DIR`; or the directory itself',
              "model.predict([\"a sentence\"])" if cfg.id2label or cfg.regression else
              "vectors = model.embed([\"a sentence\"])", "```", ""]
    return "\n".join(lines)


def _scores(metrics: dict, prefix: str = ""):
    """(dotted name, value) of every number in metrics.json that is a score (not a step count or a setting)."""
    for key, value in metrics.items():
        if key in NOT_SCORES:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _scores(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)
