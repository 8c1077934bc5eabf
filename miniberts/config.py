"""Model configuration and the 24 presets of the BERT miniatures.

The grid is the one released with "Well-Read Students Learn Better" (Turc et al., 2019): L in {2,4,6,8,10,12}
layers x H in {128,256,512,768} hidden units, H/64 heads and a 4H feed-forward layer, uncased WordPiece vocab.
`BertConfig` reads and writes both Google's `bert_config.json` (google-research/bert modeling.py) and the
Hugging Face `config.json` (transformers BertConfig).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import CheckpointError
from .settings import SettingsError

LAYERS = (2, 4, 6, 8, 10, 12)
HIDDEN = (128, 256, 512, 768)
ALIASES = {"tiny": "2-128", "mini": "4-256", "small": "4-512", "medium": "8-512", "base": "12-768"}

# The released checkpoints: one Hugging Face Hub repo per preset, `google/bert_uncased_L-{L}_H-{H}_A-{H/64}`, and the
# commit of its `main` that `released:NAME` loads, so a released checkpoint never changes under a user. These are
# the commits that public projects pin for these repos (their `main` has not moved since 2021); none was checked
# against the Hub from the machine that wrote this table. Sources: 2-128 and 4-256 are pinned by many public projects;
# 4-512 by two independent ones; 6-256 and 8-256 by one only (a project that read them from the Hub API in 2026-08).
# A preset with no commit here loads the repo's `main` as it is, and `miniberts download` prints the commit it
# resolved (docs/release.md).
RELEASE_ORG = "google"
RELEASED_COMMITS = {
    "2-128": "30b0a37ccaaa32f332884b96992754e246e48c5f",
    "4-256": "387825ce42dbb39b87911cdf8e383ee3b25184f8",
    "4-512": "606e4d55252882ac25ba1f1d1a182075830f5a90",
    "6-256": "67ada51801f40684c01ca3f20c97a35fa7a67d36",
    "8-256": "fff21c203abcc9365418f2e46bb6801a2b98e3da",
}

# Activation names: ours -> Hugging Face. Google's bert_config.json says "gelu" but its modeling.py computes the
# tanh approximation, so a Google config maps to "gelu_tanh" (see `from_google_json`).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
HF_ACTIVATIONS_IN = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh"}

# config.json keys that ask transformers to run Python code shipped with the model (trust_remote_code).
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")

# Sizes that must be whole numbers >= 1 (checked before `hidden_size % num_heads` can raise a ZeroDivisionError).
# The shortest input that holds a token of each text of a pair: [CLS] a [SEP] b [SEP].
MIN_PAIR_LENGTH = 5

SIZES = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
         "type_vocab_size")

_SHARED_KEYS = {  # our field -> key used by both Google and HF configs
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "initializer_range": "initializer_range",
}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"  # "gelu" (exact, erf) or "gelu_tanh" (Google's approximation)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # Task head, when the model has one: id2label[i] names class i; an empty list means regression (one score).
    id2label: list[str] = field(default_factory=list)
    regression: bool = False

    def __post_init__(self):
        for name in SIZES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CheckpointError(f"{name} must be a whole number, got {value!r}")
            if value < 1:
                raise CheckpointError(f"{name} must be at least 1, got {value}")
        if self.hidden_size % self.num_heads:
            raise CheckpointError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_act not in HF_ACTIVATIONS:
            raise CheckpointError(f"hidden_act {self.hidden_act!r} is not one of {sorted(HF_ACTIVATIONS)}")

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.id2label)

    # --- Google's bert_config.json -------------------------------------------------------------------------
    @classmethod
    def from_google_json(cls, path: Path) -> "BertConfig":
        raw = _read_json(path)
        kwargs = {ours: raw[theirs] for ours, theirs in _SHARED_KEYS.items() if theirs in raw}
        act = raw.get("hidden_act", "gelu")
        kwargs["hidden_act"] = "gelu_tanh" if act == "gelu" else HF_ACTIVATIONS_IN.get(act, act)
        return _build(cls, kwargs, path)

    def to_google_dict(self) -> dict:
        d = {theirs: getattr(self, ours) for ours, theirs in _SHARED_KEYS.items()}
        d["hidden_act"] = "gelu" if self.hidden_act == "gelu_tanh" else "gelu"
        return d

    # --- Hugging Face config.json ---------------------------------------------------------------------------
    @classmethod
    def from_hf_json(cls, path: Path) -> "BertConfig":
        raw = _read_json(path)
        remote = sorted(k for k in REMOTE_CODE_KEYS if raw.get(k))
        if remote:
            raise CheckpointError(f"{path}: asks for remote code ({', '.join(remote)}); refused: miniberts builds its "
                                  "own BERT and never runs code that came with a model")
        if raw.get("model_type", "bert") != "bert":
            raise CheckpointError(f"{path}: model_type is {raw['model_type']!r}, expected 'bert'")
        kwargs = {ours: raw[theirs] for ours, theirs in _SHARED_KEYS.items() if theirs in raw}
        act = raw.get("hidden_act", "gelu")
        if act not in HF_ACTIVATIONS_IN:
            raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (expected one of {sorted(HF_ACTIVATIONS_IN)})")
        kwargs["hidden_act"] = HF_ACTIVATIONS_IN[act]
        kwargs["layer_norm_eps"] = raw.get("layer_norm_eps", 1e-12)
        kwargs["pad_token_id"] = raw.get("pad_token_id", 0)
        kwargs["regression"] = raw.get("problem_type") == "regression"
        id2label = raw.get("id2label")
        if id2label and not kwargs["regression"]:
            if not isinstance(id2label, dict) or sorted(id2label, key=str) != sorted(map(str, range(len(id2label)))):
                keys = sorted(id2label, key=str) if isinstance(id2label, dict) else id2label
                raise CheckpointError(f"{path}: id2label must number its labels 0..{len(id2label) - 1}, got keys {keys}")
            kwargs["id2label"] = [id2label[str(i)] for i in range(len(id2label))]
        return _build(cls, kwargs, path)

    def to_hf_dict(self, architectures: list[str]) -> dict:
        d = {theirs: getattr(self, ours) for ours, theirs in _SHARED_KEYS.items()}
        d.update(
            model_type="bert",
            architectures=architectures,
            hidden_act=HF_ACTIVATIONS[self.hidden_act],
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
            position_embedding_type="absolute",
        )
        if self.regression:
            d.update(problem_type="regression", id2label={"0": "score"}, label2id={"score": 0})
        elif self.id2label:
            d.update(
                problem_type="single_label_classification",
                id2label={str(i): name for i, name in enumerate(self.id2label)},
                label2id={name: i for i, name in enumerate(self.id2label)},
            )
        return d

    def with_task(self, id2label: list[str], regression: bool) -> "BertConfig":
        return replace(self, id2label=list(id2label), regression=regression)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    layers: int
    hidden: int

    @property
    def name(self) -> str:
        return f"{self.layers}-{self.hidden}"

    @property
    def aliases(self) -> list[str]:
        """Other names: the paper's nickname where it has one, and the released repo name."""
        nick = [alias for alias, name in ALIASES.items() if name == self.name]
        return nick + [f"bert_uncased_L-{self.layers}_H-{self.hidden}_A-{self.hidden // 64}"]

    @property
    def repo_id(self) -> str:
        """The Hugging Face Hub repo of the released checkpoint of this size."""
        return f"{RELEASE_ORG}/{self.aliases[-1]}"

    @property
    def revision(self) -> str | None:
        """The pinned commit of the released repo (None: not pinned, its `main` is read)."""
        return RELEASED_COMMITS.get(self.name)

    def config(self) -> BertConfig:
        return BertConfig(
            hidden_size=self.hidden,
            num_layers=self.layers,
            num_heads=self.hidden // 64,
            intermediate_size=4 * self.hidden,
        )


PRESETS: dict[str, Preset] = {f"{l}-{h}": Preset(l, h) for l in LAYERS for h in HIDDEN}


def find_preset(name: str) -> Preset | None:
    """A preset by `L-H` name, nickname (`tiny`), `L/H`, or released repo name; None if it is not one."""
    key = name.strip().lower().replace("/", "-")
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    for preset in PRESETS.values():
        if key in preset.aliases or key.endswith("/" + preset.aliases[-1]):
            return preset
    return None


def param_count(cfg: BertConfig) -> int:
    """Parameters of the encoder with pooler, counted as `transformers.BertModel` counts them."""
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h
    return embeddings + n * layer + pooler


def check_length(max_length: int, cfg: BertConfig, where: str, pairs: bool = False) -> None:
    """A length the model at `where` can run: within its positions, and room for both texts of a pair. Called as
    soon as the model's config is known, so `--max-length 600` on a 512-position model fails up front instead of when
    the first long text arrives."""
    if max_length > cfg.max_position_embeddings:
        raise SettingsError(f"--max-length must be at most the {cfg.max_position_embeddings} positions of {where}, "
                            f"got {max_length}")
    if pairs and max_length < MIN_PAIR_LENGTH:
        raise SettingsError(f"--max-length must be at least {MIN_PAIR_LENGTH} for text pairs "
                            f"([CLS] a [SEP] b [SEP]), got {max_length}")


def _build(cls, kwargs: dict, path: Path) -> "BertConfig":
    """The config from a file's values; an impossible one (H % heads, a size given as text) names the file."""
    try:
        return cls(**kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object of model settings, found {type(raw).__name__}")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: missing config keys {missing}")
    return raw

