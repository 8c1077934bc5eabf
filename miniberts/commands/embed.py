"""`miniberts embed MODEL INPUT --output OUT.npy`: one embedding row per input line, in order."""

import logging
from pathlib import Path

import numpy as np

from .. import backends
from ..checkpoint import load_encoder
from ..device import DTYPES, pick_device, resolve_dtype
from ..fileio import atomic_path
from ..infer import embed, read_lines

HELP = "Sentence embeddings for a text file (one text per line) -> .npy"


def add_arguments(parser):
    parser.add_argument("model", help="a model directory (Hugging Face or Google TF layout)")
    parser.add_argument("input", help="text file, one text per line (split on \\n only)")
    parser.add_argument("--output", required=True, help="output .npy file: float32 [lines, hidden]")
    parser.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="pooled [CLS] output or mean of tokens")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text, including [CLS]/[SEP]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="fp32 = exact reference numbers; auto = bf16 where the hardware has it natively")
    backends.add_arguments(parser)


def run(args):
    texts = read_lines(args.input)
    encoder, tokenizer = load_encoder(args.model)
    device = pick_device()
    dtype = resolve_dtype(args.dtype, device)
    encoder, dtype = backends.for_encoder(encoder, args.backend, backends.precision_of(dtype, args.int8),
                                          min(args.batch_size, len(texts)), device)
    vectors = embed(encoder, tokenizer, texts, args.pooling, args.max_length, args.batch_size, device, dtype, progress=True)
    output = Path(args.output)
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    logging.info("wrote %s: %d x %d (%s, %s on %s)", output, *vectors.shape, args.pooling, dtype, device)
