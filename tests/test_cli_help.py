"""Every command's --help ends with examples of its use, taken from its module's docstring; --version names
the package's version."""

import argparse

import pytest

import guidedmae
from guidedmae.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser by its words, e.g. {'pretrain': ..., 'data synth': ...}."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                words = f"{prefix} {name}".strip()
                found[words] = subparser
                found.update(commands(subparser, words))
    return found


@pytest.mark.parametrize("words", sorted(commands(build_parser())))
def test_every_command_shows_an_example_of_itself(words, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main([*words.split(), "--help"])
    assert exit_code.value.code == 0
    help_text = capsys.readouterr().out
    examples = help_text.split("examples:\n", 1)[1].splitlines()
    assert any(line.strip().startswith(f"guidedmae {words} ") for line in examples), help_text


def test_the_main_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "guidedmae pretrain demo resume=auto" in help_text


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["--version"])
    assert exit_code.value.code == 0
    assert capsys.readouterr().out == f"guidedmae {guidedmae.__version__}\n"
