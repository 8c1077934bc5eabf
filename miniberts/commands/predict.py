"""`miniberts predict MODEL INPUT --output FILE`: labels and probabilities (or scores) per input row."""

import logging
from pathlib import Path

from ..cli import add_dataclass_arguments, dataclass_from_args
from ..device import pick_device, resolve_dtype
from ..inference.backends import precision_of
from ..inference.config import PredictConfig

HELP = "Predict labels + probabilities (or scores) for a CSV/TSV/JSONL/text file with a fine-tuned model"


def add_arguments(parser):
    parser.add_argument("model", help="a fine-tuned model directory (e.g. a `miniberts finetune` RUN) or its "
                                      "Hub id (org/name[@revision])")
    parser.add_argument("input", help=".csv/.tsv/.jsonl with a header, or plain text with one text per line")
    parser.add_argument("--output", required=True, help="output file: .csv, .tsv or .jsonl")
    parser.add_argument("--text-column", help="column with the text (default: 'text' or 'sentence')")
    parser.add_argument("--text-pair-column", help="column with the second text of a pair")
    add_dataclass_arguments(parser, PredictConfig)


def run(args):
    from ..inference.predict import predict_file

    settings = dataclass_from_args(PredictConfig, args)  # checked before any file is read
    device = pick_device()
    dtype = resolve_dtype(settings.dtype, device)
    n = predict_file(args.model, args.input, args.output, args.text_column, args.text_pair_column,
                     settings.max_length, settings.batch_size, device, dtype, progress=True,
                     backend=settings.backend, int8=settings.int8)
    logging.info("wrote %s: %d predictions (%s on %s)", Path(args.output), n, precision_of(dtype, settings.int8),
                 device)
