"""`miniberts finetune --model DIR|PRESET (--task NAME [--glue-dir DIR] | --train F --dev F ...) --out RUN`."""

import dataclasses

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "Fine-tune a classifier/regressor on a GLUE task, a built-in task, or your own CSV/TSV/JSONL files"


def add_arguments(parser):
    from ..train.finetune import FinetuneConfig, LoopConfig

    parser.add_argument("--config", help="JSON file with settings (flags given explicitly win)")
    loop = tuple(f.name for f in dataclasses.fields(LoopConfig))
    add_dataclass_arguments(parser.add_argument_group("model, task and data"), FinetuneConfig, skip=loop)
    add_dataclass_arguments(parser.add_argument_group("training"), LoopConfig)


def run(args):
    from ..api import finetune
    from ..train.finetune import FinetuneConfig

    finetune(dataclass_from_args(FinetuneConfig, args))
