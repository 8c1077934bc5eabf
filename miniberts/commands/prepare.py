"""`miniberts prepare --train-files FILES... --cache-dir DIR`: tokenize and build instances ahead of `pretrain`."""

import json
import logging
from pathlib import Path

from ..cli import add_dataclass_arguments, dataclass_from_args
from ..errors import MinibertsError
from ..train.pretrain import DATA_FIELDS, PretrainConfig, build_model, prepare_data

HELP = "Tokenize text files into cached token-id shards and sequences (what `pretrain --cache-dir` reads)."


def add_arguments(parser):
    skip = tuple(f for f in PretrainConfig.__dataclass_fields__ if f not in DATA_FIELDS)
    add_dataclass_arguments(parser, PretrainConfig, skip=skip)


def run(args):
    cfg = dataclass_from_args(PretrainConfig, args)
    if not cfg.cache_dir:
        raise MinibertsError("give the cache directory with --cache-dir DIR (then pass the same to pretrain)")
    _, tokenizer = build_model(cfg, Path(cfg.cache_dir))
    data = prepare_data(cfg, tokenizer, Path(cfg.cache_dir))
    logging.info("prepared %s", cfg.cache_dir)
    print(json.dumps(data.counts, indent=2))
