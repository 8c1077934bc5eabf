"""`miniberts predict MODEL INPUT --output FILE`: labels and probabilities (or scores) per input row."""

import logging
from pathlib import Path

from .. import backends
from ..device import DTYPES, pick_device, resolve_dtype

HELP = "Predict labels + probabilities (or scores) for a CSV/TSV/JSONL/text file with a fine-tuned model"


def add_arguments(parser):
    parser.add_argument("model", help="a fine-tuned model directory (e.g. a `miniberts finetune` RUN)")
    parser.add_argument("input", help=".csv/.tsv/.jsonl with a header, or plain text with one text per line")
    parser.add_argument("--output", required=True, help="output file: .csv, .tsv or .jsonl")
    parser.add_argument("--text-column", help="column with the text (default: 'text' or 'sentence')")
    parser.add_argument("--text-pair-column", help="column with the second text of a pair")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text, including [CLS]/[SEP]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="fp32 = exact reference numbers; auto = bf16 where the hardware has it natively")
    backends.add_arguments(parser)


def run(args):
    from ..predict import predict_file

    device = pick_device()
    dtype = resolve_dtype(args.dtype, device)
    n = predict_file(args.model, args.input, args.output, args.text_column, args.text_pair_column, args.max_length,
                     args.batch_size, device, dtype, progress=True, backend=args.backend, int8=args.int8)
    logging.info("wrote %s: %d predictions (%s on %s)", Path(args.output), n, str(dtype).removeprefix("torch."), device)
