"""`miniberts <command>`: one small module per command under miniberts/commands/.

Each command module has HELP (one line), `add_arguments(parser)` and `run(args) -> int | None`. A MinibertsError
reaches the user as one line on stderr with exit status 2, never as a stack trace.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import errno
import gc
import importlib
import logging
import os
import sys
import typing

from .errors import MinibertsError
from .settings import annotation_kind, read_settings_file

STDOUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # `> /dev/full`, a full disk or quota
COMMANDS = [
    "models",
    "convert",
    "embed",
    "finetune",
    "glue",
    "predict",
    "pretrain",
    "prepare",
    "vocab",
    "data",
    "distill",
    "quickstart",
    "experiment",
    "export",
    "bench",
    "serve",
    "download",
]


class _Flatten(argparse.Action):
    """`--flag a,b c` -> [a, b, c]: each token was split on commas by its type (`_comma_list`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [item for group in values for item in group])


def _comma_list(item: type):
    """An argparse type: one token `a,b` -> [item(a), item(b)] (argparse's one-line error for a bad number)."""
    def parse(text: str) -> list:
        try:
            return [item(part) for part in text.split(",") if part]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {item.__name__} values separated by commas or spaces, "
                                             f"got {text!r}") from None
    return parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                            comma_lists: bool = False) -> None:
    """One `--flag` per dataclass field (underscores become dashes), its default and help from the field.
    `comma_lists`: list flags also take `a,b` (a grid's axes); off where list items are file names."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool, "bool | None"):  # a None default: --flag / --no-flag / neither (decided later)
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, list):
            _, item = annotation_kind(hints.get(f.name, f.type))  # list[int] -> each value parsed as int
            kind = item if item in (int, float) else str
            if comma_lists:
                parser.add_argument(flag, nargs="+", type=_comma_list(kind), action=_Flatten, default=default,
                                    help=help_text)
            else:
                parser.add_argument(flag, nargs="+", type=kind, default=default, help=help_text)
        else:
            kind = type(default) if default is not None else {"int | None": int, "float | None": float}.get(f.type, str)
            shown = f" (default: {default})" if default is not None else ""  # a None default's help says what decides
            parser.add_argument(flag, type=kind, default=default, help=help_text + shown)


def dataclass_from_args(cls, args: argparse.Namespace):
    """Fill `cls` from parsed flags, after any `--config file.json` values (flags given explicitly win)."""
    values = read_settings_file(args.config, cls) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name) and (f.name not in values or getattr(args, f.name) != _default(cls, f.name)):
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def _default(cls, name):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the one `argv` starts with: a command module imports what it runs (the
    training stack, the engines), so a command imports only its own module, not the fourteen others."""
    parser = argparse.ArgumentParser(prog="miniberts", description="The BERT miniatures: pre-train, distill, fine-tune, serve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS:
        module = importlib.import_module(f"miniberts.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The program (`miniberts ...`, `python -m miniberts ...`; argv None) or a call from Python (argv given)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv is None:  # the program: once the command is done, the interpreter's exit need not collect its objects
        # The exit's cyclic collections walk every object torch and the engines created, a visible part of a
        # short command's wall time; frozen, they are skipped (atexit handlers and file closing still run).
        atexit.register(gc.freeze)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        status = args.run(args) or 0
        sys.stdout.flush()  # a full device or a closed pipe shows here, not at exit as a traceback
        return status
    except MinibertsError as e:
        print(f"miniberts {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"miniberts {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `miniberts models | head -1`: the reader has what it wanted; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush then has nowhere to fail
        return 141  # 128 + SIGPIPE, the status of a Unix tool stopped by a closed pipe
    except OSError as e:
        if e.filename is not None or e.errno not in STDOUT_FULL:  # a file the command opened names itself
            raise
        print(f"miniberts {args.command}: error: standard output: cannot write ({e.strerror or e})", file=sys.stderr)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 2


if __name__ == "__main__":
    sys.exit(main())
