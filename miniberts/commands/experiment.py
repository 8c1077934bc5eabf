"""`miniberts experiment --students ... --strategies ... (--task NAME | --train F --dev F ...) --out DIR`."""

import dataclasses
import typing

from ..cli import add_dataclass_arguments, dataclass_from_args
from ..errors import MinibertsError

HELP = "The paper's comparisons as one resumable grid of runs, with seeds and confidence intervals"


def add_arguments(parser):
    from ..train.experiment import ExperimentConfig

    parser.add_argument("--config", help="JSON file with the same settings (flags given explicitly win)")
    add_dataclass_arguments(parser, ExperimentConfig)


def split_lists(cls, args) -> None:
    """List flags take `a b`, `a,b` or both; numbers of a list[int] field become ints (argparse leaves strings)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if not isinstance(value, list):
            continue
        items = [part for item in value for part in str(item).split(",") if part]
        if hints[f.name] == list[int]:
            try:
                items = [int(item) for item in items]
            except ValueError:
                raise MinibertsError(f"--{f.name.replace('_', '-')} takes whole numbers, got {value}") from None
        setattr(args, f.name, items)


def run(args):
    from ..api import experiment
    from ..train.experiment import ExperimentConfig

    split_lists(ExperimentConfig, args)
    summary = experiment(dataclass_from_args(ExperimentConfig, args))
    print(summary["table"])
    print(f"\n{summary['cells']} cells, {summary['minutes']} minutes; results in {args.out or 'the --config out'}")
