"""What the commands share: one refusal of --source with --file, and library errors said in flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.errors import ConfigError

BOTH = "error: give either --source or --file, not both (--file PATH is --source PATH)"


@pytest.mark.parametrize(
    "command",
    [
        ["data", "words"],
        ["data", "text"],
        ["train", "--steps", "1", "--out", "{tmp}/run"],
    ],
)
def test_every_command_refuses_source_and_file_together(tmp_path, command):
    corpus = tmp_path / "w.txt"
    corpus.write_text("ab 3\nba 2\n")
    args = [a.format(tmp=tmp_path) for a in command] + ["--source", "sample", "--file", str(corpus)]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2 and BOTH in out.output, out.output
    assert not (tmp_path / "run").exists()


def test_file_alone_names_the_corpus(tmp_path):
    corpus = tmp_path / "w.txt"
    corpus.write_text("ab 3\nba 2\n")
    out = CliRunner().invoke(cli, ["data", "words", "--file", str(corpus), "--json"])
    assert out.exit_code == 0, out.output
    assert '"num_words": 2' in out.output


def test_a_library_error_is_said_in_the_commands_flags():
    error = ConfigError("max_length must be positive, got 0 (and top 3)", params=("max_length", "top"))
    assert str(error) == "max_length must be positive, got 0 (and top 3)"
    assert error.naming({}) == "--max-length must be positive, got 0 (and --top 3)"
    assert error.naming({"max_length": "-n"}) == "-n must be positive, got 0 (and --top 3)"
    assert ConfigError("top_k is 0", params=("top",)).naming({}) == "top_k is 0"  # only whole words


def test_a_parameter_is_said_as_a_flag_where_it_is_a_name_not_where_it_is_a_word_of_prose():
    from pyroseq.runs import RunConfig

    with pytest.raises(ConfigError) as refused:
        RunConfig(model="rnn", training="professor", devices=2).validate()
    assert refused.value.naming({}) == (
        "--training professor updates its discriminator outside the SVI step, which data-parallel training "
        "does not average: train it with --devices 1 --num-nodes 1"
    )
    activity = ConfigError(
        "activity: the noise dimensions' activity is measured on words drawn from p(w); drop it",
        params=("activity",),
    )
    assert activity.naming({}) == (
        "--activity: the noise dimensions' activity is measured on words drawn from p(w); drop it"
    )
    # name=value, and a name no English word spells (an underscore), are names wherever they stand
    twice = ConfigError("top=0: pass top=5, or max_length; max_length is 3", params=("top", "max_length"))
    assert twice.naming({}) == "--top 0: pass --top 5, or --max-length; --max-length is 3"
