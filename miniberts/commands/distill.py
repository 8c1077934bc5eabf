"""`miniberts distill --teacher DIR --student PRESET|DIR --transfer FILES... (--task NAME | user-task flags) --out RUN`."""

import dataclasses

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "Distill a fine-tuned teacher into a student on unlabeled transfer text (Pre-trained Distillation)"


def add_arguments(parser):
    from ..train.distill import DistillConfig
    from ..train.finetune import FinetuneConfig, LoopConfig

    parser.add_argument("--config", help="JSON file with settings (flags given explicitly win)")
    loop = tuple(f.name for f in dataclasses.fields(LoopConfig))
    inherited = tuple(f.name for f in dataclasses.fields(FinetuneConfig))
    add_dataclass_arguments(parser.add_argument_group("distillation"), DistillConfig, skip=inherited)
    add_dataclass_arguments(parser.add_argument_group("task and data"), FinetuneConfig, skip=loop + ("model",))
    add_dataclass_arguments(parser.add_argument_group("training"), LoopConfig)


def run(args):
    from ..api import distill
    from ..train.distill import DistillConfig

    distill(dataclass_from_args(DistillConfig, args))
