"""The Compare screen's charts on a textual-plotext plot: one bar chart per figure, or the eval-loss curves overlaid.

Plotting happens at render time with the widget's own ``plt``, once per change or resize (never ``show()``).
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from loratui.core.compare import RunRow, chart_series, fmt_count, needs_log, no_data_text, short_titles
from loratui.ui.widgets.loss_chart import downsample

#: the charts, in the order ``t`` cycles through them
CHARTS = ("metric", "time", "params", "memory", "curves")
CURVE_COLORS = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")


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
        name, unit, values = chart_series(self.rows)[i] if self.rows else ("", "", [])
        return name + (f" ({unit})" if unit else "") + (" · log scale" if needs_log(values) else "")

    def _replot(self, width: int) -> bool:
        plt = self.plt
        plt.clear_figure()  # bars set their own y ticks: start each chart from a blank figure (render sets size)
        labels = short_titles(self.rows)[0]  # the part of the names that differs: 80 columns tell them apart
        if self.chart == "curves":
            drawn = False
            for i, (label, r) in enumerate(zip(labels, self.rows)):
                if not r.eval_curve:
                    continue
                xs, ys = downsample([float(s) for s, _ in r.eval_curve], [v for _, v in r.eval_curve], 2 * width)
                plt.plot(xs, ys, marker="braille", color=CURVE_COLORS[i % len(CURVE_COLORS)], label=label[:16])
                drawn = True
            plt.yfrequency(4)
            return drawn
        i = CHARTS.index(self.chart)
        _, _, values = chart_series(self.rows)[i]
        pairs = [(label, v) for label, v in zip(labels, values) if v is not None]
        if not pairs:
            return False
        pairs.reverse()  # horizontal bars draw bottom-up: keep the table's order from the top
        names = [p[0][:14] for p in pairs]
        vals = [p[1] for p in pairs]
        if needs_log(vals):
            logs = [math.log10(max(v, 1.0)) for v in vals]
            plt.bar(names, logs, orientation="horizontal", color="cyan", width=0.6)
            top = math.ceil(max(logs))
            ticks = list(range(0, top + 1))
            plt.xticks(ticks, [fmt_count(10 ** t) for t in ticks])
            plt.xlim(0, top)
        else:
            plt.bar(names, vals, orientation="horizontal", color="cyan", width=0.6)
            plt.xfrequency(4)
            accuracy = all(r.metric_name == "accuracy" for r in self.rows)  # a loss of 0.07 to 0.09 has its own scale
            if self.chart == "metric" and accuracy and all(0 <= v <= 1 for v in vals):
                plt.xlim(0, 1)
        return True

    def render(self) -> RenderResult:
        if not self.rows:
            return Text("no runs to compare", style="dim", justify="center")
        key = (self._version, self.size.width, self.size.height, self.app.theme, self.theme)
        if self._cached is None or self._cached[0] != key:
            drawn = self._replot(self.size.width)
            result = super().render() if drawn else Text(no_data_text(self.rows, self.title), style="dim",
                                                            justify="center")
            self._cached = (key, result)
        return self._cached[1]
