"""`miniberts vocab --files F... --size N [--cased] [--min-frequency K] --out DIR`: train a WordPiece vocabulary."""

import json

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "Train a WordPiece vocabulary (cased or uncased) on your text: DIR/vocab.txt + tokenizer.json for --vocab DIR"


def add_arguments(parser):
    from ..vocab import VocabConfig

    parser.add_argument("--config", help="JSON file of VocabConfig fields (flags given explicitly win)")
    add_dataclass_arguments(parser, VocabConfig)


def run(args):
    from ..vocab import VocabConfig, run as train

    stats = train(dataclass_from_args(VocabConfig, args))
    print(json.dumps({k: stats[k] for k in ("size", "cased", "special_ids", "training_text")}, indent=2,
                     ensure_ascii=False))
