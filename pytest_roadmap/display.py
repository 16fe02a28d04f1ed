"""How text from outside is shown: control characters escaped, secrets masked.

API answers, error bodies and task titles reach the terminal and the report files. Raw,
an ESC sequence there clears a screen or retitles a window, and a carriage return
overwrites a line; so everything shown goes through `escape_controls`. The token and a
password in the API URL must never be shown or saved: `Secrets` masks them in text and
`shown_url` in URLs. And `counted`, a count with its noun in the right number.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

MASK = "***"

# C0 and C1 controls and DEL; Unicode line separators and bidirectional overrides and
# isolates, which reorder what a reader sees ("Trojan Source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A password shorter than this is masked only where it stands in a URL: replaced
# everywhere, a short one ("pass") would mangle ordinary words and generated code.
MIN_FREE_PASSWORD = 8


def counted(count: int, noun: str, plural: str = "") -> str:
    """ "1 health probe", "2 health probes"; `plural` where an "s" is not the plural."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def shown_workers(workers: int, inflight: int) -> str:
    """The workers of a run as the reports show them: "2", or "2 x 32 requests in flight"."""
    return f"{workers} x {inflight} requests in flight" if inflight > 1 else str(workers)


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\r`, ...),
    except those in `keep` (e.g. "\\n\\t" where line breaks are legitimate output)."""
    if not _CONTROL.search(text):  # the common case: nothing to do
        return text
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escaped(m.group()), text)


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """(text before the user part, the user part, the rest from "@" on), or None.

    By hand rather than urlsplit, which raises on some malformed addresses that a
    message must still show masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    netloc_end = min(ends, default=len(rest))
    user, at, _ = rest[:netloc_end].rpartition("@")
    if not at:
        return None
    return f"{scheme}://", user, rest[len(user) :]


def shown_url(url: str) -> str:
    """`url` with the password of its user part masked (`http://user:***@host/...`)."""
    split = _split_userinfo(url)
    if split is None or ":" not in split[1]:
        return url
    head, user, rest = split
    return f"{head}{user.partition(':')[0]}:{MASK}{rest}"


class Secrets:
    """The run's secrets, masked in any text: the token, and the API URL's credentials
    (as the URL holds them, and as HTTP Basic sends them, base64-encoded)."""

    def __init__(self, token: str | None = None, api: str | None = None) -> None:
        found: dict[str, str] = {}
        if token:
            found[token] = MASK
        split = _split_userinfo(api) if api else None
        if split is not None and ":" in split[1]:
            user_part = split[1]
            user, password = user_part.split(":", 1)
            found[f"{user_part}@"] = f"{user}:{MASK}@"
            plain = f"{unquote(user)}:{unquote(password)}"  # what HTTP Basic sends
            found[base64.b64encode(plain.encode()).decode()] = MASK
            for form in {password, unquote(password)}:
                if len(form) >= MIN_FREE_PASSWORD:
                    found[form] = MASK
        # Longest first, so "user:pw@" is masked whole before "pw" alone.
        self._pairs = sorted(found.items(), key=lambda pair: -len(pair[0]))

    def __bool__(self) -> bool:
        return bool(self._pairs)

    @property
    def values(self) -> tuple[str, ...]:
        """Every form of every secret: what a command check's environment must not hold."""
        return tuple(secret.rstrip("@") for secret, _ in self._pairs)

    def mask(self, text: str) -> str:
        """`text` with every secret masked."""
        for secret, mask in self._pairs:
            if secret in text:
                text = text.replace(secret, mask)
        return text

    def mask_all(self, value: Any) -> Any:
        """`value` (JSON-like data) with every string in it masked, keys included."""
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_all(k): self.mask_all(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_all(v) for v in value]
        return value
