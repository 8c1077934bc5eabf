"""`miniberts glue --model DIR --glue-dir DIR --out DIR [--tasks ...] [--grid card|quick] [--seeds N]
[--submission DIR]`: the model card's grid search."""

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "The model card's grid search (batch x lr, best on dev) per task: resumable, tables, heatmaps, GLUE submission"


def add_arguments(parser):
    from ..train.glue import GlueConfig

    parser.add_argument("--config", help="JSON file with settings (flags given explicitly win)")
    add_dataclass_arguments(parser, GlueConfig)


def run(args):
    from ..api import glue
    from ..train.glue import GlueConfig

    glue(dataclass_from_args(GlueConfig, args))
