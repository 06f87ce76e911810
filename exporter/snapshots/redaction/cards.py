"""Payment card numbers and IBANs: the checks (Luhn, mod-97) and where they sit in a run of text.

Both are found without backtracking and checked in time linear in the run: card spans from two
prefix sums of Luhn values, IBAN prefixes from the mod-97 value of the one before.
"""

from __future__ import annotations

import re
from itertools import accumulate

# Card numbers: 13-19 digits in groups, the groups separated by up to three of: space, tab,
# no-break space, `-`, `.`, `+` or `%20` (form and URL encodings of a space). A run is every
# group so joined; the card is a span of whole groups inside it (`card_windows`). Each loop
# step takes separators and one digit, so a run is found without backtracking. Patterns are
# searched in UTF-8 bytes (a no-break space is C2 A0), candidates first found by C-level scans
# of translated copies: digits and separator bytes -> "0"; letters -> "A", digits -> "0".
CARD_RUN = re.compile(r"(?<![0-9])[0-9](?:(?:[ \t\u00a0.+\-]|%20){0,3}[0-9]){12,}")
CARD_RUN_B = re.compile(rb"(?<![0-9])[0-9](?:(?:[ \t.+\-]|\xc2\xa0|%20){0,3}[0-9]){12,}")
CARD_CLASSES = bytes(48 if c in b"0123456789 \t.+-%\xc2\xa0" else c for c in range(256))  # "0" or itself
THIRTEEN = b"0" * 13
ZEROS = re.compile(rb"0+")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_LUHN_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
# IBANs in either case, compact or in groups of four (one or two spaces or no-break spaces).
# A match that fails mod-97 is tried again without its trailing groups (`... 7034 from`).
IBAN_B = re.compile(
    rb"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:(?: |\xc2\xa0){0,2}[A-Za-z0-9]{4}){2,7}"
    rb"(?:(?: |\xc2\xa0){0,2}[A-Za-z0-9]{1,4})?(?![A-Za-z0-9])"
)
IBAN_CLASSES = bytes(65 if chr(c).isascii() and chr(c).isalpha() else 48 if 48 <= c <= 57 else c for c in range(256))
IBAN_GAP = re.compile(r"[ \u00a0]+")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = IBAN_GAP.sub("", text)
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


_IBAN_DIGITS = str.maketrans({c: str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"})


_IBAN_GROUPS: dict[str, tuple[int, int]] = {}  # a group -> (value, 10**digits), mod 97


def iban_length(candidate: str) -> int:
    """Length of the longest prefix of an IBAN-shaped match, ending with one of its groups, that
    passes mod-97; 0 if none. One pass: the check value of each prefix follows from the one
    before it (the country code and check digits, moved to the end, add a fixed 6 digits)."""
    groups = candidate[4:].split()
    head = int(candidate[:4].translate(_IBAN_DIGITS))
    cache = _IBAN_GROUPS
    rest = 0
    compact = 4
    best = -1
    for i, group in enumerate(groups):
        vs = cache.get(group)
        if vs is None:
            digits = group.translate(_IBAN_DIGITS)
            vs = (int(digits) % 97, pow(10, len(digits), 97))
            if len(cache) < 65536:
                cache[group] = vs
        rest = (rest * vs[1] + vs[0]) % 97
        compact += len(group)
        if 15 <= compact <= 34 and (rest * 1_000_000 + head) % 97 == 1:
            best = i
    if best < 0:
        return 0
    pos = 4
    for group in groups[: best + 1]:
        pos = candidate.find(group, pos) + len(group)
    return pos


def card_windows(run: str) -> list[tuple[int, int, str]]:
    """Card numbers inside one run of digit groups, as (start, end, digits): from the leftmost
    group on, the longest span of whole groups with 13-19 digits that passes the Luhn check.
    Linear: Luhn sums of every span come from two prefix sums, and a span has at most 19 groups."""
    if run.isdigit():  # the usual case: one group, the whole run
        return [(0, len(run), run)] if len(run) <= 19 and luhn_ok(run) else []
    spans = [m.span() for m in _DIGIT_GROUP.finditer(run)]
    groups = [run[s:e] for s, e in spans]
    digits = "".join(groups)
    n_digits = len(digits)
    if n_digits < 13:
        return []
    raw = digits.encode("ascii")
    plain, doubled = raw.translate(_LUHN_PLAIN), raw.translate(_LUHN_DOUBLED)
    # Luhn doubles every second digit counted from the right end of the span: at odd indexes
    # when the span ends at an even index (sums0), at even ones otherwise (sums1).
    v0 = bytearray(plain)
    v0[1::2] = doubled[1::2]
    v1 = bytearray(plain)
    v1[0::2] = doubled[0::2]
    sums0 = list(accumulate(v0, initial=0))
    sums1 = list(accumulate(v1, initial=0))
    bounds = list(accumulate(map(len, groups), initial=0))  # digit offset where each group starts
    n = len(groups)
    out: list[tuple[int, int, str]] = []
    i = 0
    hi = 1  # largest group end with at most 19 digits from group i on
    while i < n:
        base = bounds[i]
        if n_digits - base < 13:
            break
        if hi <= i:
            hi = i + 1
        while hi < n and bounds[hi + 1] - base <= 19:
            hi += 1
        found = 0
        j = hi
        while j > i:
            end = bounds[j]
            width = end - base
            if width < 13:
                break
            if width <= 19:
                sums = sums1 if (end - 1) & 1 else sums0
                if (sums[end] - sums[base]) % 10 == 0:
                    out.append((spans[i][0], spans[j - 1][1], digits[base:end]))
                    found = j
                    break
            j -= 1
        i = found or i + 1
    return out
