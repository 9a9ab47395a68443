"""The `ckptmap` app and its entry point: errors become one line and exit code 2.

Exit codes: 0 success, 1 differences found (diff, verify), 2 trouble (bad input, bad usage, and
internal errors too, so a crash never reads as "differs"). `--debug` anywhere on the command line
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import atomic
from ..errors import CkptmapError, one_line
from . import align_cmd, batch_cmd, convert_cmd, diff_cmd, inspect_cmd, mappings_cmd, supervise, verify_cmd

app = typer.Typer(
    name="ckptmap",
    help="Inspect and remap checkpoints of recurrent neural networks (TF1, PyTorch, safetensors).",
    epilog="Exit codes: 0 ok, 1 differences found, 2 error. Add --debug anywhere for a traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich would add ~70 ms to `--help`
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version  # only here: --help and commands need not load it

        print(f"ckptmap {version('ckptmap')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    pass  # the app's own options; its help text is the Typer's


app.command("inspect", no_args_is_help=True)(inspect_cmd.inspect)
app.command("convert", no_args_is_help=True)(convert_cmd.convert)
app.command("diff", no_args_is_help=True)(diff_cmd.diff)
app.command("verify", no_args_is_help=True)(verify_cmd.verify)
app.command("mappings")(mappings_cmd.mappings)
app.command("batch", no_args_is_help=True)(batch_cmd.batch)
app.command("align", no_args_is_help=True)(align_cmd.align)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("CKPTMAP_DEBUG"))
    args = [a for a in args if a != "--debug"]
    if argv is None:  # the `ckptmap` command itself: a source truncated under it is one line
        # numpy's OpenBLAS starts a thread per core that spins for a while after each call; ckptmap
        # does no linear algebra (its own pool moves the bytes), and on a 2-core machine that
        # spinning took a core from a conversion (bench/RESULTS.md, run I). A user's setting stays.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        supervise.run_supervised(args)
    commits_before, _ = atomic.commits()
    try:
        app(args=args, prog_name="ckptmap")
    except SystemExit as e:
        if e.code == 130 and _from_ctrl_c(e):  # typer turns Ctrl-C into a silent exit 130
            print(_interrupted(commits_before), file=sys.stderr)
        raise
    except CkptmapError as e:
        if debug:
            raise
        print(f"Error: {e}", file=sys.stderr)  # one line already (CkptmapError sees to it)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print(_interrupted(commits_before), file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # an internal error: still exit 2, never 1 ("differs")
        if debug:
            raise
        print(
            f"Internal error: {type(e).__name__}: {one_line(e)}. Run again with --debug for the traceback.",
            file=sys.stderr,
        )
        sys.exit(2)


INTERRUPTED = "Interrupted; no output was left behind."


def _interrupted(commits_before: int) -> str:
    """INTERRUPTED only when it is true: `convert --verify` stopped while verifying keeps its output."""
    commits, last = atomic.commits()
    return INTERRUPTED if commits == commits_before else f"Interrupted; {last} was already written and stays."


def _from_ctrl_c(exc: BaseException) -> bool:
    """Whether an exit was caused by Ctrl-C (a KeyboardInterrupt somewhere in its chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        # `raise ... from None` (batch: its own message, its finished outputs kept) ends the chain.
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False
