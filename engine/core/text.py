"""``printable()``: text from outside made safe to print on an operator's terminal.

Why one helper at the output boundary: delivery names, lock fields (host, stream,
process), notes, reasons and hostnames come from files and other hosts, and the listings
(``downlinks``, ``locks``, ``health``, ``watch``'s human lines, ``streams``) print them on a
terminal. A name holding ESC[2J would clear the operator's screen, an OSC 52 sequence would
write their clipboard, a CR or LF would forge a line, a bidi override would show a name
reversed. Every such character is shown escaped instead, so what is printed is what is
there, one line, inert: C0 controls and DEL, C1 controls, Unicode format characters (bidi
overrides and isolates, zero-width characters), line and paragraph separators and lone
surrogates. Backslash is doubled, so the escaped form is unambiguous.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    o = ord(ch)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _unsafe(ch: str) -> bool:
    if ch == "\\":
        return True
    if " " <= ch <= "~":
        return False
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def printable(value: object, backslash: bool = True) -> str:
    """``value`` as text with every control, format and separator character escaped
    (``\\x1b``, ``\\n``, ``\\u202e``, ...); ``None`` is ``"-"``. ``backslash=False``
    leaves backslashes alone (text already escaped once, such as a JSON string)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case, cheaply
    return "".join(_escape(c) if _unsafe(c) and (backslash or c != "\\") else c for c in text)
