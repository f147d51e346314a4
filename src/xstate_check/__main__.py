"""``python -m xstate_check``: the command line."""

from xstate_check.cli import run

run()
