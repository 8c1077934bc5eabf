"""`miniberts embed MODEL INPUT --output OUT.npy`: one embedding row per input line, in order (`Model.embed`)."""

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..api import load
from ..cli import add_dataclass_arguments, dataclass_from_args
from ..device import pick_device, resolve_dtype
from ..fileio import atomic_path, check_output_path
from ..inference.backends import precision_of
from ..inference.batching import read_lines
from ..inference.config import EmbedConfig

HELP = "Sentence embeddings for a text file (one text per line) -> .npy"


def add_arguments(parser):
    parser.add_argument("model", help="a model directory (Hugging Face, Google TF or sentence-transformers layout), "
                                      "a Hub id (org/name[@revision], released:tiny) or a preset name")
    parser.add_argument("input", help="text file, one text per line (split on \\n only)")
    parser.add_argument("--output", required=True, help="output .npy file: float32 [lines, hidden]")
    add_dataclass_arguments(parser, EmbedConfig)


def run(args):
    settings = dataclass_from_args(EmbedConfig, args)  # checked before any file is read
    check_output_path(Path(args.output))  # a folder or device as --output fails before any work
    device = pick_device()
    dtype = resolve_dtype(settings.dtype, device)
    model = load(args.model, device)
    texts = read_lines(args.input)
    vectors = model.embed(texts, **dataclasses.asdict(settings), progress=True)
    output = Path(args.output)
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    logging.info("wrote %s: %d x %d (%s, %s on %s)", output, *vectors.shape, args.pooling,
                 precision_of(dtype, settings.int8), device)
