"""What is shown of text from outside: control characters escaped, secrets masked."""

from __future__ import annotations

import base64

import pytest

from pytest_roadmap.display import Secrets, escape_controls, shown_url


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x9b31m \x7f \x00", "\\x9b31m \\x7f \\x00"),
        ("abc\u202edef \u2028", "abc\\u202edef \\u2028"),
        ("ünïcødé ✓", "ünïcødé ✓"),
    ],
)
def test_escape_controls(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown
    assert escape_controls(shown) == shown  # escaping twice changes nothing


def test_escape_controls_keeps_what_it_is_told_to() -> None:
    assert escape_controls("line\n\tcode\x1b\r", keep="\n\t") == "line\n\tcode\\x1b\\r"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:8080/api?x=1", "http://user:***@host:8080/api?x=1"),
        ("https://user:p%40ss@[::1]/", "https://user:***@[::1]/"),
        ("http://user@host/", "http://user@host/"),
        ("http://host/path@x", "http://host/path@x"),
        ("http://a:b@c:notaport/", "http://a:***@c:notaport/"),
        ("http://host", "http://host"),
    ],
)
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_secrets_mask_the_token_and_the_url_credentials_in_every_form() -> None:
    secrets = Secrets("tok-123", "http://robot:long-password-1@api.example/")
    basic = base64.b64encode(b"robot:long-password-1").decode()
    text = f"tok-123 http://robot:long-password-1@api.example Basic {basic} long-password-1"
    assert secrets.mask(text) == "*** http://robot:***@api.example Basic *** ***"
    answer = {"code": ["tok-123"], "tok-123": 1, "n": 2}
    assert secrets.mask_all(answer) == {"code": ["***"], "***": 1, "n": 2}


def test_a_short_password_is_masked_only_where_it_stands_in_the_url() -> None:
    # Replaced everywhere, "pass" would mangle generated code ("passed", `pass`).
    secrets = Secrets(None, "http://me:pass@api.example/")
    assert secrets.mask("def f(): pass # me:pass@api") == "def f(): pass # me:***@api"


def test_no_secrets_change_nothing() -> None:
    secrets = Secrets(None, "http://api.example/")
    assert not secrets
    value = {"code": "x"}
    assert secrets.mask_all(value) is value
