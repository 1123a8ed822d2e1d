"""Filling a DataTable with fixed, content-measured column widths.

DataTable's auto widths are measured on idle, and a frame rendered before that keeps the narrow widths in its
render cache; measuring here keeps every frame (and every snapshot) right.
"""

from __future__ import annotations

import re
from typing import Callable

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

#: the narrowest a flex (name) column gets before the table scrolls sideways
MIN_FLEX = 12


class RowTable(DataTable):
    """A table of rows (runs, adapters, queue entries, comparisons): Home and End go to the first and last row, as in
    a file list (DataTable's own scroll sideways, which its row cursor tables never need)."""

    BINDINGS = [Binding("home", "scroll_top", "First row", show=False),
                Binding("end", "scroll_bottom", "Last row", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)


def _width(value: object) -> int:
    if isinstance(value, Text):
        return max((cell_len(line) for line in value.plain.splitlines()), default=0)
    return cell_len(str(value))


def fill_table(table: DataTable, columns: list[tuple[str, str, int]], rows: list[tuple], keys: list[str],
               select: str | None = None, flex: str | None = None, optional: tuple[str, ...] = (),
               clip: dict[str, Callable[[object, int], object]] | None = None) -> None:
    """Replace the table's rows. ``columns``: (key, label, max width). The ``flex`` column (a name) gets whatever
    width the others leave (at least ``MIN_FLEX``), so the table fits its widget; call again when the widget is
    resized. While the flex column is narrower than its content, the ``optional`` columns are left out, in that
    order (what the screen shows elsewhere too). Cells too wide are cut in the middle, so the end of a name (its
    date, its rank) stays visible, or by ``clip[key](cell, width)`` for that column (one that wraps, as
    :func:`wrap_words`, makes its row as tall as its lines). The cursor goes to ``select`` if present, else stays
    on the same row number."""
    shown = list(range(len(columns)))
    widths = _widths(columns, rows)
    if flex is not None and table.size.width:
        i = [c[0] for c in columns].index(flex)
        content = max((_width(r[i]) for r in rows), default=0)
        drop = [j for key in optional for j, c in enumerate(columns) if c[0] == key]
        pad = 2 * table.cell_padding
        while True:
            room = table.size.width - sum(widths[j] + pad for j in shown if j != i) - pad - 1
            if room >= content or not drop:
                break
            shown.remove(drop.pop(0))
        widths[i] = max(cell_len(columns[i][1]), min(content, max(room, MIN_FLEX)))
    columns = [columns[j] for j in shown]
    widths = [widths[j] for j in shown]
    rows = [tuple(r[j] for j in shown) for r in rows]
    cursor = table.cursor_row
    current = [(str(c.key.value), c.width) for c in table.ordered_columns]
    wanted = [(key, w) for (key, _, _), w in zip(columns, widths)]
    if current != wanted:
        table.clear(columns=True)
        for (key, label, _), w in zip(columns, widths):
            table.add_column(label, width=w, key=key)
    else:
        table.clear()
    clips = [(clip or {}).get(key, _clip) for key, _, _ in columns]
    for key, cells in zip(keys, rows):
        fitted = [fit(c, w) for c, w, fit in zip(cells, widths, clips)]
        table.add_row(*fitted, key=key, height=max((len(str(c).splitlines()) for c in fitted), default=1) or 1)
    if select is not None and select in keys:
        table.move_cursor(row=keys.index(select), animate=False)
    elif rows:
        table.move_cursor(row=min(max(cursor, 0), len(rows) - 1), animate=False)


def _widths(columns: list[tuple[str, str, int]], rows: list[tuple]) -> list[int]:
    """Each column's width: its content's up to its cap, never narrower than its label."""
    return [max(cell_len(label), min(cap, max((_width(r[i]) for r in rows), default=0)))
            for i, (_, label, cap) in enumerate(columns)]


def _clip(value: object, width: int) -> object:
    text = value if isinstance(value, Text) else Text(str(value))
    return middle_ellipsis(text, width)


def middle_ellipsis(text: Text, width: int) -> Text:
    """``text`` cut to ``width`` cells by an ellipsis in the middle: 'minilm-l6-v2-lora-20261125-1432' at 16 is
    'minil…25-1432'-like, keeping a third for the head and the rest for the distinguishing tail."""
    if text.cell_len <= width or len(text.plain) != text.cell_len:  # wide characters: cut at the end
        if text.cell_len > width:
            text = text.copy()
            text.truncate(width, overflow="ellipsis")
        return text
    if width <= 2:
        return text[:width]
    head = (width - 1) // 3
    tail = width - 1 - head
    return Text.assemble(text[:head], ("…", "dim"), text[len(text.plain) - tail:])


#: where a name may be cut so a whole part of it is kept ('lora-20261204-235628')
NAME_SEPARATORS = "-_./ "


def name_ellipsis(value: object, width: int) -> Text:
    """A run's name cut to ``width`` cells so its distinguishing end is whole parts: the longest tail that starts
    after a separator and leaves the head a quarter of the width, 'smollm2…lora-20261204-235628' at 28 and
    'smollm2…235628' at 14 (where the middle cut read 'smol…04-235628'). A name without such a tail (at least a
    third of the width) is cut in the middle as :func:`middle_ellipsis` does."""
    text = value if isinstance(value, Text) else Text(str(value))
    plain = text.plain
    if text.cell_len <= width or len(plain) != text.cell_len or width <= 2:
        return middle_ellipsis(text, width)
    most = width - 1 - max(3, (width - 1) // 4)
    tails = [len(plain) - i - 1 for i, ch in enumerate(plain) if ch in NAME_SEPARATORS]
    tail = max((t for t in tails if (width - 1) // 3 <= t <= most), default=0)
    if not tail:
        return middle_ellipsis(text, width)
    head = width - 1 - tail
    return Text.assemble(text[:head], ("…", "dim"), text[len(plain) - tail:])


def wrap_words(value: object, width: int, lines: int = 3) -> Text:
    """``value`` in ``width`` cells, wrapped at its spaces and after its commas onto at most ``lines`` lines ('- (CPU
    run: host' over '4.47 GiB)' where a middle cut read '- (CP…4.47 GiB)'; 'down_proj,gate_proj,' over
    'k_proj,o_proj'); a value with neither, or one that would need more lines, is cut in the middle as
    :func:`middle_ellipsis` does."""
    text = value if isinstance(value, Text) else Text(str(value))
    plain = text.plain
    if text.cell_len <= width or not ({" ", ","} & set(plain)) or len(plain) != text.cell_len or "\n" in plain:
        return middle_ellipsis(text, width)
    out: list[str] = []
    for word in plain.split(" "):
        for k, part in enumerate(re.findall(r"[^,]*,|[^,]+", word) or [""]):
            joiner = "" if k else " "  # after a comma of the same word no space is added
            if out and len(out[-1]) + len(joiner) + len(part) <= width:
                out[-1] += joiner + part
            else:
                out.append(part)
    if len(out) > lines or any(len(line) > width for line in out):
        return middle_ellipsis(text, width)
    return Text("\n".join(out), style=text.style)
