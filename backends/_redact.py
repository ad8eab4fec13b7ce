"""Masking passwords in what durable shows: store URLs, libpq connection strings, and the
messages of drivers that may quote them.

`redact` replaces every password it can recognise with ``***``: the one in a URL's user info
(``postgresql://user:secret@host/db``), a ``password=`` (or ``sslpassword=``, ``passwd=``,
``pwd=``) query parameter or libpq keyword (``host=db password=secret``, quoted values too),
and any literal secret given to it (a driver's message may quote a password out of context).
`secrets_in` finds those literals in a URL or connection string, so a message about it can be
masked even when it quotes the password alone.

Every error message, log line and ``repr`` that shows a store URL or a driver's message goes
through `redact` (`SQLStore`, the Postgres runner, the command line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["MASK", "redact", "secrets_in"]

MASK = "***"

# scheme://user:PASSWORD@host...: the password runs to the last "@" before the host, so a
# password that itself holds "@" (unescaped) is masked whole.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*:)"
    r"(?P<secret>[^\s'\"]*?)"
    r"(?=@[^\s@/?#'\"]*(?:[/?#\s'\"]|$))"
)
# password=VALUE in a URL's query or a libpq keyword/value string; VALUE may be quoted.
_KEYWORD = re.compile(
    r"(?P<head>\b(?:ssl)?(?:password|passwd|pwd)\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;'\"]*)",
    re.IGNORECASE,
)


def secrets_in(text: str) -> tuple[str, ...]:
    """The passwords a URL or connection string holds (as written and decoded), longest
    first; empty when it holds none."""
    found: set[str] = set()
    for pattern in (_USERINFO, _KEYWORD):
        for match in pattern.finditer(text):
            secret = match.group("secret")
            if secret[:1] in ("'", '"') and secret[-1:] == secret[:1] and len(secret) > 1:
                secret = secret[1:-1]
            if secret and secret != MASK:
                found.update({secret, unquote(secret)})
    return tuple(sorted(found, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password masked as ``***`` (see the module docstring).

    Args:
        text: a URL, a connection string, or a message that may contain them.
        secrets: literal passwords to mask wherever they occur (see `secrets_in`).
    """
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    text = _KEYWORD.sub(lambda m: m.group("head") + MASK, text)
    for secret in secrets:
        if secret and secret != MASK:
            text = text.replace(secret, MASK)
    return text
