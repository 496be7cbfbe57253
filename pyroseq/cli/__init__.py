"""The ``pyroseq`` command line: one module per subcommand (``main`` holds the group)."""

import sys


def main() -> None:
    """Run the ``pyroseq`` command.

    The subcommands are imported here, inside the guard: importing torch and Pyro takes seconds, and a
    Ctrl-C meanwhile should end with one line, not a traceback.
    """
    try:
        from pyroseq.cli.main import cli
    except KeyboardInterrupt:
        print("\nerror: interrupted while starting; nothing was done", file=sys.stderr)
        sys.exit(130)
    cli()
