"""`miniberts experiment --students ... --strategies ... (--task NAME | --train F --dev F ...) --out DIR`."""

from ..cli import add_dataclass_arguments, dataclass_from_args

HELP = "The paper's comparisons as one resumable grid of runs, with seeds and confidence intervals"


def add_arguments(parser):
    from ..train.experiment import ExperimentConfig

    parser.add_argument("--config", help="JSON file with the same settings (flags given explicitly win)")
    add_dataclass_arguments(parser, ExperimentConfig, comma_lists=True)  # --students tiny,mini ...


def run(args):
    from ..api import experiment
    from ..train.experiment import ExperimentConfig

    summary = experiment(dataclass_from_args(ExperimentConfig, args))
    print(summary["table"])
    if "pareto_table" in summary:
        print("\n" + summary["pareto_table"])
    print(f"\n{summary['cells']} cells, {summary['minutes']} minutes; results in {args.out or 'the --config out'}")
