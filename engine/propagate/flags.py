"""History flags (Opticks 2019 bit assignment) and seqhis spelling
(docs/design.md, "Photon layout"; docs/opticks.md, "History flags", "seqhis").

The enum is stored in every ``meta.json`` because Opticks itself reordered these bits in
2025; a reader must never guess which table an event used.
"""

from __future__ import annotations

FLAG_BITS: dict[str, int] = {
    "CK": 0,
    "SI": 1,
    "MI": 2,
    "AB": 3,
    "RE": 4,
    "SC": 5,
    "SD": 6,
    "SA": 7,
    "DR": 8,
    "SR": 9,
    "BR": 10,
    "BT": 11,
    "TO": 12,
    "NA": 13,
}
FLAG_NAMES: dict[str, str] = {
    "CK": "CERENKOV",
    "SI": "SCINTILLATION",
    "MI": "MISS",
    "AB": "BULK_ABSORB",
    "RE": "BULK_REEMIT",
    "SC": "BULK_SCATTER",
    "SD": "SURFACE_DETECT",
    "SA": "SURFACE_ABSORB",
    "DR": "SURFACE_DREFLECT",
    "SR": "SURFACE_SREFLECT",
    "BR": "BOUNDARY_REFLECT",
    "BT": "BOUNDARY_TRANSMIT",
    "TO": "TORCH",
    "NA": "NAN_ABORT",
}
FLAG_VERSION = "opticks-2019"

CK, SI, MI, AB, RE, SC, SD, SA, DR, SR, BR, BT, TO, NA = (1 << FLAG_BITS[k] for k in FLAG_BITS)
TERMINAL = MI | AB | SD | SA
_ABBR_BY_BIT = {bit: abbr for abbr, bit in FLAG_BITS.items()}


def nibble(flag: int) -> int:
    """seqhis nibble of a single-bit flag: its bit position + 1 (ffs), 0 means empty."""
    return flag.bit_length()


def parse_mask(text: str) -> int:
    """Parse "SD" / "TO,BT,SA" / "TO|SC" / "0x40" into a bit mask; ValueError on junk."""
    text = text.strip()
    if text.lower().startswith("0x"):
        return int(text, 16)
    mask = 0
    for part in text.replace("|", ",").split(","):
        part = part.strip().upper()
        if not part:
            continue
        if part not in FLAG_BITS:
            raise ValueError(f"unknown flag {part!r} (known: {', '.join(FLAG_BITS)})")
        mask |= 1 << FLAG_BITS[part]
    if mask == 0:
        raise ValueError("empty flag mask")
    return mask


def mask_label(mask: int) -> str:
    """Spell a flagmask the way Opticks tables do, in bit order: "SA|BT|TO"."""
    return "|".join(_ABBR_BY_BIT[b] for b in range(32) if mask >> b & 1 and b in _ABBR_BY_BIT)


def seqhis_label(seq: int) -> str:
    """Spell a seqhis word like Opticks, first step first: 0x8ccd -> "TO BT BT SA"."""
    out = []
    while seq:
        n = seq & 0xF
        if n:
            out.append(_ABBR_BY_BIT.get(n - 1, f"?{n}"))
        seq >>= 4
    return " ".join(out)


def bit_table() -> dict[str, int]:
    """The flag table written into meta.json: abbreviation -> bit."""
    return dict(FLAG_BITS)
