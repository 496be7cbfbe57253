"""The ``pyroseq`` command."""

from __future__ import annotations

import click

from pyroseq import __version__
from pyroseq.cli.check import check_command
from pyroseq.cli.common import OneLineErrors
from pyroseq.cli.complete import complete_command
from pyroseq.cli.data import data_command
from pyroseq.cli.evaluate import evaluate_command
from pyroseq.cli.sample import sample_command
from pyroseq.cli.train import train_command
from pyroseq.runs.allocator import keep_freed_memory


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyroseq")
def cli() -> None:
    """Probabilistic sequence models in Pyro: deep state-space models and teacher-forced baselines."""
    keep_freed_memory()  # this process only: a step's freed tensors serve the next (GLIBC_TUNABLES wins)


cli.add_command(data_command)
cli.add_command(train_command)
cli.add_command(evaluate_command)
cli.add_command(sample_command)
cli.add_command(complete_command)
cli.add_command(check_command)
