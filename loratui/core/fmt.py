"""One formatter each for bytes, durations, counts and rates (every screen and command uses these)."""

from __future__ import annotations

import math

__all__ = ["format_bytes", "format_duration", "format_count", "format_rate", "format_loss", "printable",
           "shorten_list"]


def format_bytes(n: int | float | None, unit: str | None = None) -> str:
    """1.2 GiB / 512 MiB / 512 B / N/A (binary units; ``unit`` forces one)."""
    if n is None:
        return "N/A"
    n = float(n)
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    if unit:
        return f"{n / 1024 ** units.index(unit):.1f} {unit}"
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    if i == 0:
        return f"{int(n)} B"
    return f"{n:.1f} {units[i]}" if n < 100 else f"{n:.0f} {units[i]}"


def format_duration(seconds: float | None) -> str:
    """1:02:03 / 4:05 / - (negative durations count as 0)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(per_s: float | None) -> str:
    """Tokens (or examples) a second, as every view shows them: 28 / 9,493 / - (none yet)."""
    if per_s is None or not math.isfinite(per_s) or per_s <= 0:
        return "-"
    return f"{per_s:,.0f}"


def format_loss(x: float | None) -> str:
    """A loss (train or eval) as every screen shows it: 1.032 / 12.3 / nan / - (none)."""
    if x is None:
        return "-"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def logged_at(logged: int | None, step: int | None) -> str:
    """'@N' after a figure logged at step N, when that is not the step shown beside it (a loss logged every few
    steps: 'loss 0.160@5' at step 8), as every view says it; '' when it is that step's own."""
    return f"@{logged}" if logged is not None and logged != step else ""


def format_lr(x: float | None) -> str:
    """A learning rate as every view shows it: 2.00e-04 / 0 (the schedule's end) / - (none yet)."""
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.2e}"


def format_count(n: int | float | None) -> str:
    """460.8K / 135.0M / 7.2B / 12 / -"""
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.1f}"


def printable(text: object, limit: int | None = None) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, newlines, bells) shown escaped, never
    sent; cut to ``limit`` characters. Every CLI line that shows what loratui did not write goes through this."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    if limit is not None and len(out) > limit:
        out = f"{out[:max(limit - 15, 1)]}... ({len(out)} chars)"
    return out


def shorten_list(items: list, most: int = 5) -> str:
    """'a, b, c' or 'a, b, c, d, e and 9,995 more': hostile lists make short messages."""
    shown = [printable(i, 80) for i in items[:most]]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest:,} more" if rest > 0 else "")
