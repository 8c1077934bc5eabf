"""`miniberts pretrain --model PRESET|DIR --train-files FILES... --out RUN [--steps N | --max-minutes M] ...`"""

import logging

from ..api import pretrain
from ..cli import add_dataclass_arguments, dataclass_from_args
from ..train.common import is_main
from ..train.pretrain import PretrainConfig

HELP = ("Pre-train on raw text with masked LM (+ NSP) or general distillation from a teacher; RUN/ becomes a "
        "Hugging Face model directory.")


def add_arguments(parser):
    parser.add_argument("--config", help="JSON file of PretrainConfig fields (flags given explicitly win)")
    add_dataclass_arguments(parser, PretrainConfig)


def run(args):
    metrics = pretrain(dataclass_from_args(PretrainConfig, args))
    if is_main():
        loss, acc, hidden = (metrics.get(k) for k in ("eval_mlm_loss", "eval_mlm_accuracy", "eval_hidden_loss"))
        held = f"held-out MLM loss {loss:.4f}, accuracy {acc:.4f}; " if loss is not None else ""
        if hidden is not None:
            held = f"held-out hidden-state loss {hidden:.4f}, MLM accuracy n/a; "
        logging.info("%s: %d steps, %s%s tokens at %s tokens/s", args.out, metrics["steps"], held,
                     f"{metrics['tokens_seen']:,}", metrics.get("tokens_per_s"))
    return 130 if metrics.get("interrupted") else 0
