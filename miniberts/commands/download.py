"""`miniberts download NAME... [--all] [--out DIR]`: released checkpoints or any Hub model into the Hugging Face cache
(where `--model NAME` then finds it, offline too), or into self-contained directories for machines without network."""

from pathlib import Path

from ..config import PRESETS
from ..errors import MinibertsError
from ..hub import download_ref, export_snapshot, snapshot

HELP = "Fetch models from the Hugging Face Hub into its cache (or --out DIR) for offline use."


def add_arguments(parser):
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="a Hub id (org/name[@revision]) or a preset name / released:NAME (the released "
                             "checkpoint of that size at its pinned revision)")
    parser.add_argument("--all", action="store_true", help="all 24 released checkpoints")
    parser.add_argument("--out", default="", help="also write each model as a self-contained directory "
                                                  "DIR/<repo name> (with source.json naming the commit)")


def run(args):
    names = list(args.names) + ([preset.name for preset in PRESETS.values()] if args.all else [])
    if not names:
        raise MinibertsError("download: name at least one model (a Hub id or a preset name), or --all")
    refs = [download_ref(name) for name in names]  # every name checked before anything is fetched
    for ref in refs:
        cached = snapshot(ref)
        where = export_snapshot(ref, cached, Path(args.out)) if args.out else cached
        print(f"{ref.repo_id}@{cached.name}\t{where}")  # the commit it resolved, and where the files are
