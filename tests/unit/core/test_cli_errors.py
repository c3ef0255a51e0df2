"""How the command line turns an error into one line, a JSON document and an exit code."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from ferry import errors as E
from ferry.cli import Context, command
from ferry.progress import Progress


def make_cli(exc: BaseException) -> click.Group:
    """A throwaway group with one command, registered like every ferry command, that raises ``exc``."""

    @click.group()
    @click.option("--json", "json_", is_flag=True)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def grp(ctx: click.Context, json_: bool, debug: bool) -> None:
        ctx.obj = Context(config_path=None, json=json_, debug=debug, progress=Progress())

    @command(grp, "boom")
    def boom(ctx: Context) -> None:
        raise exc

    return grp


def run(exc: BaseException, *args: str):
    return CliRunner().invoke(make_cli(exc), ["boom", *args])


def test_an_unexpected_exception_is_one_line_naming_its_type_and_exit_1():
    r = run(ValueError("bad value\nfrom somewhere"))
    assert r.exit_code == 1
    assert r.stderr == ("ferry: error: unexpected ValueError: bad value from somewhere "
                        "(re-run with --debug for the traceback and report it as a ferry bug)\n")
    assert "Traceback" not in r.output
    assert r.stdout == ""


def test_an_unexpected_exception_with_json_is_the_same_document_as_a_ferry_error():
    r = run(KeyError("colour"), "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    ferry_doc = json.loads(run(E.DeployError("x", "y"), "--json").stdout)
    assert set(ferry_doc) == {"ok", "error", "message", "hint"}
    assert set(ferry_doc) <= set(doc)
    assert doc == {"ok": False, "error": "UnexpectedError", "exception": "KeyError",
                   "message": "unexpected KeyError: 'colour'",
                   "hint": "re-run with --debug for the traceback and report it as a ferry bug"}


def test_debug_still_shows_the_traceback_of_an_unexpected_exception():
    r = run(RuntimeError("kaboom"), "--debug")
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.stderr and "RuntimeError: kaboom" in r.stderr
    assert r.stderr.rstrip().endswith("ferry: error: unexpected RuntimeError: kaboom "
                                      "(re-run with --debug for the traceback and report it as a ferry bug)")


def test_an_exception_without_a_message_still_says_what_it_was():
    r = run(ZeroDivisionError())
    assert r.exit_code == 1 and "unexpected ZeroDivisionError: (no message)" in r.stderr


@pytest.mark.parametrize("exc, code", [(E.DeployError("d"), 1), (E.ConfigError("c"), 2), (E.LockHeld("l"), 3),
                                       (E.PostDeployHookFailed("h"), 4), (E.UnexpectedError(OSError("o")), 1)])
def test_exit_codes(exc, code):
    assert run(exc).exit_code == code


def test_clicks_own_errors_and_exits_are_left_to_click():
    r = run(click.BadParameter("no such colour"))
    assert r.exit_code == 2 and "Invalid value: no such colour" in r.stderr and "unexpected" not in r.stderr
    assert run(SystemExit(1)).exit_code == 1  # `ferry status` exits 1 when a host is unhealthy
    assert run(click.exceptions.Exit(0)).exit_code == 0


def test_details_join_the_json_document_but_never_replace_ok_error_message_or_hint():
    e = E.DeployError("it failed", "fix it", details={"hosts": [{"host": "a", "release": "r1"}], "failed_host": "b",
                                                     "ok": True, "message": "not this"})
    r = run(e, "--json")
    doc = json.loads(r.stdout)
    assert doc == {"ok": False, "error": "DeployError", "message": "it failed", "hint": "fix it",
                   "hosts": [{"host": "a", "release": "r1"}], "failed_host": "b"}
    # the human line is unchanged by details
    assert r.stderr == "ferry: error: it failed (fix it)\n"


def test_existing_constructor_calls_keep_working():
    assert E.FerryError("m").details == {}
    assert E.FerryError("m", "h").to_json() == {"error": "FerryError", "message": "m", "hint": "h"}
    reg = E.RegistryError("r", "h", 401)
    assert reg.status == 401 and reg.details == {}
    assert E.AuthError("a", details={"registry": "x"}).to_json()["registry"] == "x"
    assert not issubclass(E.PostDeployHookFailed, E.DeployError)  # traffic did move
