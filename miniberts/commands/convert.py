"""`miniberts convert SRC OUT`: Hugging Face or Google TF directory -> Hugging Face layout."""

import logging

from ..checkpoint import convert

HELP = "Convert a Hugging Face or Google TF checkpoint directory to the Hugging Face layout."


def add_arguments(parser):
    parser.add_argument("src", help="a Hugging Face directory (config.json), Google TF directory (bert_config.json) "
                                    "or a Hub id (org/name[@revision], released:tiny)")
    parser.add_argument("out", help="output directory (Hugging Face layout: config.json, model.safetensors, vocab)")
    parser.add_argument("--force", action="store_true", help="write into a folder that holds other files too (a file "
                                                             "miniberts did not write is never replaced)")


def run(args):
    out = convert(args.src, args.out, args.force)
    logging.info("wrote %s", out)
