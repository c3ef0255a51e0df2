"""`ferry local up --python 3.13,3.14`: which bases it asks for, checked before anything starts."""

from __future__ import annotations

import pytest

from ferry.errors import ConfigError
from ferry.local.commands import parse_pythons


def test_comma_separated_and_repeated_pythons_are_one_ordered_list_without_repeats():
    assert parse_pythons(("3.13,3.14",)) == ("3.13", "3.14")
    assert parse_pythons(("3.14", "3.13, 3.14")) == ("3.14", "3.13")
    assert parse_pythons(()) == ()


def test_a_python_ferry_has_no_base_for_is_refused_with_the_ones_it_has():
    with pytest.raises(ConfigError) as e:
        parse_pythons(("3.13,3.12",))
    assert e.value.message == "--python: ferry has no base for Python 3.12"
    assert e.value.hint == "use one or more of 3.11, 3.13, 3.14 (ferry/assets/base/python-3.X.toml)"


def test_python_bases_and_no_base_image_contradict():
    with pytest.raises(ConfigError, match="--no-base-image says not to"):
        parse_pythons(("3.13",), no_base_image=True)


def test_the_cli_refuses_an_unknown_python_before_starting_anything(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ferry.cli import main

    monkeypatch.chdir(tmp_path)  # no ferry.toml: nothing would be read either
    r = CliRunner().invoke(main, ["local", "up", "--python", "3.9"])
    assert r.exit_code != 0 and "ferry has no base for Python 3.9" in r.output
