"""The Compare screen's charts: one bar chart per figure, or the eval-loss curves overlaid on a textual-plotext plot.

A bar chart is text: a line a run, its label (the table's column title), its bar in the run's colour and its value as
the table writes it, a blank line between runs where the height allows (plotext's bars of four runs at 80x24 ran
into each other, labelled every other row, and a run without a value dropped out). The curves are plotted at render
time with the widget's own ``plt``, once per change or resize (never ``show()``).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from loratui.core.compare import RunRow, bar_blocks, bar_scale, chart_series, needs_log, no_data_text, short_titles
from loratui.ui.widgets.loss_chart import downsample, flat_limits, nice_ticks
from loratui.ui.widgets.tables import name_ellipsis

#: the charts, in the order ``n`` cycles through them
CHARTS = ("metric", "time", "params", "memory", "curves")
CURVE_COLORS = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")
#: a run's bar colour: its curve's, the first six at least (plotext's orange is the terminal's colour 3, Rich's yellow)
BAR_COLORS = ("cyan", "yellow", "green", "magenta", "red", "blue", "bright_yellow", "white")
#: the narrowest a run's label gets in the curves' legend before runs are left out of it
LEGEND_MIN = 6
#: the narrowest a bar's label gets (a longer one takes up to a third of the width, then is cut in its middle)
LABEL_MIN = 8


class CompareChart(PlotextPlot):
    DEFAULT_CSS = """
    CompareChart { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.rows: list[RunRow] = []
        self.chart = CHARTS[0]
        self._version = 0
        self._cached: tuple[tuple, RenderResult] | None = None

    def set_rows(self, rows: list[RunRow]) -> None:
        self.rows = rows
        self._version += 1
        self.refresh()

    def show_chart(self, chart: str) -> None:
        self.chart = chart
        self._version += 1
        self.refresh()

    @property
    def title(self) -> str:
        if self.chart == "curves":
            return "eval loss by step"
        i = CHARTS.index(self.chart)
        name, unit, values, _ = chart_series(self.rows)[i] if self.rows else ("", "", [], [])
        return name + (f" ({unit})" if unit else "") + (" · log scale" if needs_log(values) else "")

    def _replot(self, width: int) -> bool:
        """The eval-loss curves on the plotext figure; False when no run has one yet."""
        plt = self.plt
        plt.clear_figure()
        labels = short_titles(self.rows)[0]  # the part of the names that differs: 80 columns tell them apart
        all_x: list[float] = []
        all_y: list[float] = []
        for i, (label, r) in enumerate(zip(labels, self.rows)):
            if not r.eval_curve:
                continue
            xs, ys = downsample([float(s) for s, _ in r.eval_curve], [v for _, v in r.eval_curve], 2 * width)
            # no labels: the legend is in the title line above the chart (legend()); plotext puts its own at the top
            # left, where every loss curve starts (the base model's evaluation), and covered those points
            if len(xs) == 1:  # a single evaluation: a marker, as a braille dot of one point is hard to see
                plt.scatter(xs, ys, marker="●", color=CURVE_COLORS[i % len(CURVE_COLORS)])
            else:
                plt.plot(xs, ys, marker="braille", color=CURVE_COLORS[i % len(CURVE_COLORS)])
            all_x += xs
            all_y += ys
        # one evaluation (or all at one step, or one loss): a range around it, not plotext's -1 to 1 for a 0
        if all_x and min(all_x) == max(all_x):  # steps from 0, as the Monitor draws them
            top = max(1, int(all_x[0]))
            plt.xlim(0, top)
            ticks = nice_ticks(top, max(2, width // 12))
            plt.xticks(ticks, [str(t) for t in ticks])
        ylim = flat_limits(all_y)
        if ylim:
            plt.ylim(*ylim)
        plt.yfrequency(4)
        return bool(all_x)

    def legend(self, width: int) -> tuple[Text, int]:
        """The curves' legend in ``width`` cells, and how many runs it leaves out: each run with a curve, its marker
        in its curve's colour and its label (cut in the middle to fit; the runs that still don't fit are counted)."""
        shown = [(label, r, i) for i, (label, r) in enumerate(zip(short_titles(self.rows)[0], self.rows))
                 if r.eval_curve]
        if not shown:
            return Text(), 0
        widest = max(cell_len(label) for label, _, _ in shown)
        for n in range(len(shown), 0, -1):  # as many runs as fit, each label at least LEGEND_MIN cells
            more = f"  +{len(shown) - n}" if n < len(shown) else ""
            room = (width - cell_len(more) - 4 * n + 2) // n  # '● label' and two spaces between entries
            if room >= min(widest, LEGEND_MIN):
                break
        out = Text(no_wrap=True, overflow="crop")
        for k, (label, r, i) in enumerate(shown[:n]):
            out.append("  " if k else "")
            out.append("●" if len(r.eval_curve) == 1 else "⢕", style=BAR_COLORS[i % len(BAR_COLORS)])
            out.append(" ")
            out.append_text(name_ellipsis(label, min(room, widest)))
        return out.append(more, style="dim"), len(shown) - n

    def bars(self, width: int, height: int) -> Text | None:
        """This chart's bars in ``width`` x ``height`` cells, in the table's order; None when no run has a value.
        Every run has its line, one without a value too ('-'); the labels are the table's column titles (cut in the
        middle past a third of the width) and the values are whole: the bars get the width they leave."""
        _, _, values, texts = chart_series(self.rows)[CHARTS.index(self.chart)]
        known = [v for v in values if v is not None]
        if not known:
            return None
        labels = short_titles(self.rows)[0]
        label_w = min(max(cell_len(label) for label in labels), max(LABEL_MIN, width // 3))
        text_w = max(cell_len(t) for t in texts)
        bar_w = max(1, width - 1 - label_w - 2 - 1 - text_w - 1)  # ' label ┤bar value '
        log = needs_log(values)
        top = max(bar_scale(v, log) for v in known) or 1.0
        accuracy = all(r.metric_name == "accuracy" for r in self.rows)  # a loss of 0.07 to 0.09 has its own scale
        if self.chart == "metric" and accuracy and all(0 <= v <= 1 for v in known):
            top = 1.0
        n = len(self.rows)
        shown = n if n <= height else max(0, height - 1)
        gap = 2 * shown - 1 <= height
        out = Text(no_wrap=True, overflow="crop")
        for i in range(shown):
            if i:
                out.append("\n\n" if gap else "\n")
            label = name_ellipsis(labels[i], label_w)
            label.pad_right(label_w - label.cell_len)
            out.append(" ")
            out.append_text(label)
            out.append(" ┤", style="dim")
            if values[i] is None:  # '-', or a figure this chart does not draw (a classifier's accuracy beside losses)
                out.append(f" {texts[i]}", style="dim")
                continue
            out.append(bar_blocks(values[i], top, bar_w, log), style=BAR_COLORS[i % len(BAR_COLORS)])
            out.append(f" {texts[i]}")
        if shown < n:
            out.append(f"\n +{n - shown} more: the table above shows every run", style="dim")
        return out

    def render(self) -> RenderResult:
        if not self.rows:
            return Text("no runs to compare", style="dim", justify="center")
        key = (self._version, self.size.width, self.size.height, self.app.theme, self.theme)
        if self._cached is None or self._cached[0] != key:
            if self.chart == "curves":
                result = super().render() if self._replot(self.size.width) else None
            else:
                result = self.bars(self.size.width, self.size.height)
            if result is None:
                result = Text(no_data_text(self.rows, self.title), style="dim", justify="center")
            self._cached = (key, result)
        return self._cached[1]
