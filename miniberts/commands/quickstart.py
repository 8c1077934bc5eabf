"""`miniberts quickstart [--out DIR]`: pre-train -> distill -> fine-tune on built-in real data, with the results table."""

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "The paper's comparison end to end on built-in real data (Tiny student, MiniLM teacher, Rotten Tomatoes)"


def add_arguments(parser):
    from ..quickstart import QuickstartConfig

    add_dataclass_arguments(parser, QuickstartConfig)


def run(args):
    from ..quickstart import QuickstartConfig, run as quickstart

    quickstart(dataclass_from_args(QuickstartConfig, args))
