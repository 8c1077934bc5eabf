"""`miniberts quickstart [--out DIR]`: the paper's five arms with seeds and intervals on built-in real data."""

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "The paper's comparison end to end on built-in real data (Tiny student, MiniLM teacher, Rotten Tomatoes, 3 seeds)"


def add_arguments(parser):
    from ..train.quickstart import QuickstartConfig

    add_dataclass_arguments(parser, QuickstartConfig)


def run(args):
    from ..train.quickstart import QuickstartConfig, run as quickstart

    summary = quickstart(dataclass_from_args(QuickstartConfig, args))
    print(summary["table"])
    print(f"\n{summary['minutes']} minutes; results in {args.out}")
