"""Train and eval loss curves on a textual-plotext plot, downsampled to the widget's width before plotting."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

Series = tuple[list[float], list[float]]


def downsample(xs: list[float], ys: list[float], target: int) -> Series:
    """At most ``target`` points: means of equal consecutive groups (the last point kept exactly)."""
    n = len(xs)
    if n <= target or target < 2:
        return list(xs), list(ys)
    group = -(-n // (target - 1))  # ceil, leaving room for the exact last point
    out_x, out_y = [], []
    for i in range(0, n - 1, group):
        j = min(i + group, n - 1)
        k = j - i
        out_x.append(sum(xs[i:j]) / k)
        out_y.append(sum(ys[i:j]) / k)
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    return out_x, out_y


def flat_limits(values: list[float], floor: float | None = 0.0) -> tuple[float, float] | None:
    """Axis limits for a series with a single value (one point, or a flat line): a tenth of the value either side,
    at least 0.05, never below ``floor`` (a loss is never negative); None when the values span a range, which
    plotext's own limits fit. Left to plotext, one value ``v`` spans ``0.5v`` to ``1.5v``, and ``0`` spans -1 to 1."""
    if not values or min(values) != max(values):
        return None
    v = values[0]
    pad = max(abs(v) * 0.1, 0.05)
    lo, hi = v - pad, v + pad
    if floor is not None and v >= floor and lo < floor:
        lo, hi = floor, max(hi, floor + 2 * pad)
    return lo, hi


def nice_ticks(top: int, count: int) -> list[int]:
    """Round step ticks from 0 to ``top`` (0, 50, 100, ...), at most ``count`` + 1 of them."""
    if top <= 0:
        return [0]
    raw = top / max(1, count)
    mag = 10 ** max(0, len(str(int(raw))) - 1)
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return list(range(0, top + 1, step))


class LossChart(PlotextPlot):
    """Train loss (braille line) and eval loss (line with ● markers) against the step.

    Call :meth:`set_data`; plotting happens at render time, once per change or resize, using the widget's own
    ``plt`` (never the global plotext module, never ``show()``).
    """

    DEFAULT_CSS = """
    LossChart { width: 1fr; height: 1fr; min-height: 6; padding-right: 1; }
    """

    #: the legend, for the border title of the box the chart sits in: each series' marker (not only its colour,
    #: which a 256-colour or colour-blind reader can't tell apart). Inside the plot it covered the top-left corner,
    #: where the base model's step-0 evaluation is.
    LEGEND = Text.assemble("loss: ", ("⢕", "cyan"), " train ", ("●", "orange1"), " eval")  # whole at 60 columns

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 placeholder: str = "waiting for the first logged step"):
        super().__init__(name=name, id=id, classes=classes)
        self.train: Series = ([], [])
        self.eval: Series = ([], [])
        self.max_steps: int = 0
        self.placeholder = placeholder
        self._cached: tuple[tuple, RenderResult] | None = None
        self._version = 0

    def set_data(self, train: Series, eval_: Series, max_steps: int = 0) -> None:
        self.train, self.eval, self.max_steps = train, eval_, max_steps
        self._version += 1
        self.refresh()

    def _replot(self, width: int) -> None:
        plt = self.plt
        plt.clear_data()
        target = max(8, 2 * width)  # braille: two dots per cell
        tx, ty = downsample(*self.train, target)
        if tx:
            plt.plot(tx, ty, marker="braille", color="cyan")
        ex, ey = downsample(*self.eval, target)
        if ex:  # no labels: the legend is the border title (LEGEND), off the data
            if len(ex) > 1:
                plt.plot(ex, ey, marker="braille", color="orange")
            if len(ex) <= width // 3:
                plt.scatter(ex[:-1], ey[:-1], marker="●", color="orange")
            plt.scatter(ex[-1:], ey[-1:], marker="●", color="orange")
        xmax = max(self.max_steps, int(max(tx[-1] if tx else 0, ex[-1] if ex else 0)), 1)
        plt.xlim(0, xmax)
        ylim = flat_limits(ty + ey)
        if ylim:  # one point, or a flat line: a range around it, not plotext's -1 to 1 for a 0
            plt.ylim(*ylim)
        ticks = nice_ticks(xmax, max(2, width // 12))
        plt.xticks(ticks, [str(t) for t in ticks])
        plt.yfrequency(4)
        plt.xlabel("")
        plt.ylabel("")
        plt.title("")

    def render(self) -> RenderResult:
        if not self.train[0] and not self.eval[0]:
            return Text(self.placeholder, style="dim", justify="center")
        key = (self._version, self.size.width, self.size.height, self.app.theme, self.theme)
        if self._cached is None or self._cached[0] != key:
            self._replot(self.size.width)
            self._cached = (key, super().render())
        return self._cached[1]
