"""Settings of `embed` and `predict`, shared by the CLI flags and the Python API (`Model.embed`, `Model.predict`).

Both dataclasses are checked by miniberts/settings.py when they are built, before any file is read. The one bound that
needs the model, a length within its positions, is `miniberts.config.check_length`, called as soon as the model's
config is known.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..device import DTYPES
from ..settings import validate
from .backends import BACKENDS

POOLINGS = ("auto", "cls", "pooler", "mean")
# The shortest input that still holds a token of text: [CLS] x [SEP] (a pair's bound, MIN_PAIR_LENGTH, is in
# miniberts/config.py's check_length). Shorter lengths would silently drop the whole text (or fail inside the
# tokenizer), so they are refused.
MIN_LENGTH = 3
DTYPE_HELP = "fp32 = exact reference numbers; auto = bf16 where the hardware has it natively"
BACKEND_HELP = ("what runs the encoder: auto (the default: the fastest installed backend for this precision, model "
                "size and batch shape, measured, miniberts/inference/backends/auto.py; fp32 stays within 1e-5 of torch), torch "
                "(the reference), or an engine on its exported graph (exported once per weights, cached in "
                "$MINIBERTS_CACHE or ~/.cache/miniberts)")
INT8_HELP = ("int8 weights: with --backend auto the most accurate int8 engine (OpenVINO's NNCF int8 calibrated on "
             "built-in text, the attention and feed-forward outputs kept in fp32: cosine >= 0.99 to fp32 on every "
             "sentence of the real MiniLM, very short ones included), else the named backend's int8 path")


@dataclass
class EmbedConfig:
    pooling: str = field(default="auto", metadata={
        "help": "auto = a sentence-transformers directory's own pooling (modules.json), else mean; cls = the raw "
                "[CLS] hidden state; pooler = BERT's tanh pooled output; mean = average of the real tokens",
        "choices": POOLINGS})
    normalize: bool | None = field(default=None, metadata={
        "help": "L2-normalise every row (default: when --pooling auto and the directory has a Normalize module)"})
    max_length: int | None = field(default=None, metadata={
        "help": "tokens per text, [CLS]/[SEP] included (default: the directory's max_seq_length, else the model's "
                "positions)", "min": MIN_LENGTH})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass", "min": 1})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP, "choices": DTYPES})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP, "choices": BACKENDS})
    int8: bool = field(default=False, metadata={"help": INT8_HELP})

    def __post_init__(self):
        validate(self)


@dataclass
class PredictConfig:
    max_length: int = field(default=128, metadata={"help": "tokens per text (or pair), [CLS]/[SEP] included",
                                                   "min": MIN_LENGTH})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass", "min": 1})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP, "choices": DTYPES})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP, "choices": BACKENDS})
    int8: bool = field(default=False, metadata={"help": INT8_HELP})

    def __post_init__(self):
        validate(self)


@functools.lru_cache(maxsize=256, typed=True)  # typed: 1 is not taken for True, nor 32.0 for 32
def _validated(cls, **settings):
    return cls(**settings)


def settings_of(cls, **settings):
    """`cls(**settings)` (EmbedConfig or PredictConfig), validated once per distinct setting: validation is a share
    of a one-sentence `Model.embed`. The instance is shared between calls, so it is read, never changed. A setting
    that cannot be a cache key (a list) is validated, and refused, uncached."""
    try:
        return _validated(cls, **settings)
    except TypeError:  # unhashable: validation gives its own one-line error
        return cls(**settings)
