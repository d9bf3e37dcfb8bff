import click
from click.testing import CliRunner

from featpipe.errors import ArgumentError, FeatpipeError


def test_an_argument_error_names_python_arguments_and_can_be_spelled_as_flags():
    error = ArgumentError("{epochs} and {fine_tune_epochs} are both 0; {x} stays", "epochs", "fine_tune_epochs")
    assert isinstance(error, FeatpipeError)
    assert str(error) == "epochs and fine_tune_epochs are both 0; {x} stays"
    assert error.spelled(lambda name: "--" + name.replace("_", "-")) == (
        "--epochs and --fine-tune-epochs are both 0; {x} stays")


def test_the_command_line_spells_each_argument_as_its_flag(monkeypatch):
    from featpipe import cli

    @click.command("boom")
    @click.option("--max-memory")
    @click.option("--head", "heads", multiple=True)
    def boom(max_memory, heads):
        raise ArgumentError("over {max_memory}; use {head} logreg; {unknown} too", "max_memory", "head", "unknown")

    monkeypatch.setitem(cli.main.commands, "boom", boom)
    result = CliRunner().invoke(cli.main, ["boom"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "featpipe: error: over --max-memory; use --head logreg; unknown too"
