"""The state database's URL (``[state] url``, ``SKYDECK_STATE_URL``): parsed once, and a
password in it never shown.

Why a module of its own: the URL is input from two places (the config file, the
environment) and it may carry a secret. Whatever shows the URL (error lines, ``config``
output, the console's header, logs) shows ``StateURL.redacted``, where a password (in the
user part or a ``password=`` parameter) is ``***``; a driver error that quotes the URL is
passed through ``scrub``. The URL itself goes only to libpq, so the usual libpq ways keep
working: ``~/.pgpass``, ``PGPASSWORD``, ``service=`` with a service file, and TLS options
(``sslmode``, ``sslrootcert``...) as URL parameters.

``parse_state_url`` is total: any text gives a ``StateURL`` or ``BadInput`` naming where
the text came from (a Hypothesis test says so). Only ``postgresql://`` and ``postgres://``
URLs are state URLs; an empty text means "the SQLite file" and is handled by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from engine.core.errors import BadInput

SCHEMES = ("postgresql", "postgres")
MAX_URL = 4096
MASK = "***"
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class StateURL:
    """A PostgreSQL state URL: ``conninfo`` for libpq, ``redacted`` for people."""

    conninfo: str
    redacted: str
    password: str | None  # the password the URL carries, if any (never shown)
    database: str  # the database name ("" when libpq's default applies)
    # how long one call waits for the server when it is unreachable ([state] wait_s; the
    # daemon and `run` wait longer, a health probe not at all: engine/store/outage.py)
    wait_s: float = 30.0

    def __str__(self) -> str:
        return self.redacted

    def scrub(self, text: object) -> str:
        """``text`` with any occurrence of the password (raw or URL-quoted) masked."""
        out = str(text)
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                out = out.replace(form, MASK)
        return out


def has_password(text: str) -> bool:
    """Whether a state URL text carries a password (cheap; for the file-mode rule)."""
    try:
        return parse_state_url(text, None).password is not None
    except BadInput:
        return False


def parse_state_url(text: str, where: str | PathLike[str] | None) -> StateURL:
    """``text`` as a state URL, or BadInput naming ``where`` (the config file, or the
    variable) with the problem, the URL redacted as far as it could be read."""
    if not isinstance(text, str):
        raise BadInput("the state URL must be text", where)
    if len(text) > MAX_URL:
        raise BadInput(f"the state URL is longer than {MAX_URL} characters", where)
    if _BAD_CHARS.search(text):
        raise BadInput("the state URL holds a space or a control character", where)
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise BadInput(
            "the state URL must start with postgresql:// (an empty url means "
            "the SQLite file in the workspace)",
            where,
        )
    try:
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
        password = parts.password
        user_part, _, hostport = parts.netloc.rpartition("@")
        _ = parts.port  # ValueError for a port that is no number in range
    except ValueError as err:
        raise BadInput(f"malformed state URL ({_first_line(err)})", where) from None
    if parts.fragment:
        raise BadInput("the state URL has a '#' fragment; libpq takes options as ?key=value", where)
    query_pw = [v for k, v in query if k == "password"]
    secret = unquote(password) if password is not None else (query_pw[-1] if query_pw else None)
    redacted_user = user_part
    if password is not None:
        redacted_user = f"{user_part.split(':', 1)[0]}:{MASK}"
    netloc = f"{redacted_user}@{hostport}" if user_part or "@" in parts.netloc else hostport
    red_query = "&".join(f"{k}={MASK if k == 'password' else v}" for k, v in query)
    redacted = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{red_query}" if red_query else "")
    database = unquote(parts.path.lstrip("/"))
    return StateURL(conninfo=text, redacted=redacted, password=secret or None, database=database)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__
