"""`miniberts models`: the 24 presets as a table or JSON, with the Hub repo of each released checkpoint.

A preset name (`tiny`) is a random initialisation; `released:tiny` (or the repo id itself) is the released checkpoint,
at the pinned `revision` where there is one (docs/release.md)."""

import json

from ..config import PRESETS, param_count
from ..hub import RELEASED

HELP = "List the 24 BERT miniature presets (L layers x H hidden)."


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per preset")


def rows() -> list[dict]:
    out = []
    for preset in PRESETS.values():
        cfg = preset.config()
        out.append({
            "name": preset.name,
            "aliases": preset.aliases,
            "layers": cfg.num_layers,
            "hidden": cfg.hidden_size,
            "heads": cfg.num_heads,
            "intermediate": cfg.intermediate_size,
            "params": param_count(cfg),
            "repo": preset.repo_id,
            "revision": preset.revision,
            "released": f"{RELEASED}{preset.name}",
        })
    return out


def run(args):
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'name':<7} {'alias':<7} {'layers':>6} {'hidden':>6} {'heads':>5} {'ffn':>5} {'params':>12}  "
          "released as (load it as released:NAME)")
    for r in table:
        nick = r["aliases"][0] if len(r["aliases"]) > 1 else ""
        print(f"{r['name']:<7} {nick:<7} {r['layers']:>6} {r['hidden']:>6} {r['heads']:>5} {r['intermediate']:>5} "
              f"{r['params']:>12,}  {r['repo']}" + (f"@{r['revision'][:8]}" if r["revision"] else ""))
