"""Compare screen on the recorded runs: the side-by-side table, the charts, a study's runs, export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.core.study import write_study_tag
from loratui.ui.screens.compare import CompareScreen

pytestmark = pytest.mark.usefixtures("utc")

ORDER = ["smollm2-demo", "smollm2-stopped", "smollm2-bs64-oom"]


def compare_app(runs_dir: Path, **kwargs):
    return host_app(lambda: CompareScreen(**kwargs), runs_dir=runs_dir)


def renamed_compare(runs: Path, names: list[str]):
    """Compare on copies of the recorded runs (ORDER) under ``names``."""
    import shutil

    for name, source in zip(names, ORDER):
        shutil.copytree(runs / source, runs / name)
    return compare_app(runs, runs=[runs / n for n in names])


async def test_table_and_charts(runs):
    app = compare_app(runs, runs=[runs / n for n in ORDER])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        text = screen_text(app)
        assert "smollm2-demo" in text and "smollm2-bs64-oom" in text
        for label in ("trainable share", "final eval loss", "active time", "wall time", "tokens/s", "peak GPU memory",
                      "size on disk", "train.batch_size"):
            assert label in text
        assert "0.341%" in text and "3.21 GiB" in text and "1:33" in text
        assert "train.max_steps" in text and "lora.r" not in text  # only what differs
        titles = []
        for _ in range(5):
            titles.append(screen.query_one("#cmp-chart-title").render().plain.split("   ")[0])
            await pilot.press("n")
        assert titles == ["eval loss: final, or so far", "active time", "trainable params", "peak GPU memory (GiB)",
                          "eval loss by step"]


async def test_a_study_and_export(runs):
    for i, name in enumerate(ORDER):
        write_study_tag(runs / name, "demo-study", "20260105-090000", f"variant {i}", {}, i)
    app = compare_app(runs)  # nothing chosen: the newest study
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        assert [r.name for r in screen.rows] == ORDER and screen.heading == "study demo-study"
        assert "variant 0" in screen_text(app)
        await pilot.press("e")
        await wait_until(pilot, lambda: screen.last_export is not None, what="export")
    csv_path, md_path = screen.last_export
    assert csv_path == runs / "compare" / "demo-study.csv" and md_path.suffix == ".md"
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["label"] for r in rows] == ["variant 0", "variant 1", "variant 2"]
    assert rows[0]["study"] == "demo-study" and rows[0]["final_metric"] == "1.0324"
    md = md_path.read_text()
    assert md.startswith("# Study demo-study") and "## active time" in md and "## eval loss by step" in md


async def test_nothing_to_compare(tmp_path):
    app = compare_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="compare")
        assert "Nothing to compare yet" in screen_text(app)


def test_snapshot_compare(runs, snap_compare):
    async def settle(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.loaded, what="compare")

    app = compare_app(runs, runs=[runs / n for n in ORDER])
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_snapshot_compare_curves(runs, snap_compare):
    async def settle(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.loaded, what="compare")
        await pilot.press("shift+n")  # backwards from the first chart: the eval-loss curves

    app = compare_app(runs, runs=[runs / n for n in ORDER])
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


async def test_shift_n_goes_back_a_chart_as_a_terminal_sends_it(runs):
    """The walk of the new bars: Shift+N did nothing in tmux; a terminal sends 'N', never 'shift+n'."""
    from loratui.ui.widgets.compare_chart import CompareChart

    app = compare_app(runs, runs=[runs / n for n in ORDER])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="compare")
        await pilot.press("N")
        assert app.screen.query_one(CompareChart).chart == "curves"


async def test_at_80_columns_the_columns_and_bars_show_what_tells_runs_apart(runs):
    """Issue 19 item 6: default names share 'smollm2-135m-instruct-lora-2026...': every header, bar label and
    legend read 'smollm2-135m-'. The columns and bars show the part that differs; the shared head is said once."""
    app = renamed_compare(runs, [f"smollm2-135m-instruct-lora-20261204-{t}" for t in ("0912", "0931", "0950")])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        lines = screen_text(app).splitlines()
        assert "smollm2-135m-instruct-lora-20261204-…" in lines[0]
        header = lines[1]
        assert all(t in header for t in ("0912", "0931", "0950")), header
        await pilot.press("n")  # active time: a bar a run, labelled
        await pilot.pause()
        bars = [ln for ln in screen_text(app).splitlines() if "┤" in ln]
        assert sorted(ln.split("┤")[0].strip() for ln in bars) == ["0912", "0931", "0950"], bars


async def test_the_curves_legend_leaves_the_points_in_view(runs):
    """QA walk: plotext's legend sits in the plot's top-left corner, where every loss curve starts (the first
    evaluation), and covered those points. The legend is in the chart's title line; the plot holds the curves only."""
    from dataclasses import replace

    from loratui.ui.widgets.compare_chart import CompareChart

    app = compare_app(runs, runs=[runs / n for n in ORDER])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        await pilot.press("N")
        await pilot.pause()
        chart = screen.query_one(CompareChart)
        plot = chart.render().plain.splitlines()
        assert not any(label in ln for ln in plot for label in ("demo", "stopped")), plot
        top = next(ln for ln in plot if "┤" in ln)  # the highest tick's row: the first evaluation, at the left
        assert top.split("┤", 1)[1][:2].strip(" ") != "", plot
        title = screen.query_one("#cmp-chart-title").render().plain
        assert title == "eval loss by step   ⢕ demo  ⢕ stopped   chart 5/5 · n next", title
        # six runs: labels cut in the middle to fit; where even that is too wide, the runs left out are counted
        chart.rows = [replace(r, label=f"variant number {k}", eval_curve=chart.rows[0].eval_curve)
                      for k, r in enumerate(chart.rows * 2)]
        legend, left_out = chart.legend(58)
        assert left_out == 0 and legend.cell_len <= 58 and legend.plain.count("⢕ ") == 6, legend.plain
        legend, left_out = chart.legend(40)
        assert left_out == 3 and legend.cell_len <= 40 and legend.plain.count("⢕ ") == 3, legend.plain
        assert legend.plain.endswith("  +3") and "…" in legend.plain, legend.plain
        assert chart.legend(200) == (chart.legend(200)[0], 0) and "variant number 5" in chart.legend(200)[0].plain


async def test_a_run_not_finished_has_no_final_metric_only_its_latest(runs):
    """Issue 19 item 7: a running (or stopped) run's last evaluation, on the curve's slice of the held-out set, was
    called 'final'. Only a finished run's closing evaluation is; the others read 'so far'."""
    app = compare_app(runs, runs=[runs / n for n in ORDER])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        row = next(ln for ln in screen_text(app).splitlines() if ln.lstrip().startswith("final eval loss"))
        assert "1.0324 " in row and "1.0324 so far" not in row  # smollm2-demo finished
        assert "1.4617 so far" in row  # smollm2-stopped: its newest evaluation, not a final one


async def test_cpu_runs_say_why_they_have_no_gpu_memory(runs):
    """Issue 19 item 18: finished CPU runs read 'no data yet' for memory, as if it were still coming."""
    import json
    import shutil

    for name in ("cpu-a", "cpu-b"):
        shutil.copytree(runs / "smollm2-demo", runs / name)
        events = [json.loads(ln) for ln in (runs / name / "events.jsonl").read_text().splitlines()]
        events = [{**e, "device": "cpu"} if e["kind"] == "started" else e for e in events if e["kind"] != "memory"]
        (runs / name / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app = compare_app(runs, runs=[runs / "cpu-a", runs / "cpu-b"])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        await pilot.press("n", "n", "n")  # metric, time, params, memory
        await pilot.pause()
        text = screen_text(app)
        assert "peak GPU memory" in text and "no data yet" not in text
        assert "no GPU memory: these runs trained on the CPU" in text, text


async def test_a_loss_chart_is_scaled_to_the_losses_and_accuracy_to_one(runs, monkeypatch):
    """Final eval losses of 0.07 and 0.09 were drawn on a 0-1 axis (a QA walk: bars a cell long); accuracies keep
    their 0-1 axis."""
    from dataclasses import replace

    from loratui.ui.widgets import compare_chart
    from loratui.ui.widgets.compare_chart import CompareChart

    tops = []
    blocks = compare_chart.bar_blocks
    monkeypatch.setattr(compare_chart, "bar_blocks", lambda v, top, *a: tops.append(top) or blocks(v, top, *a))
    app = compare_app(runs, runs=[runs / n for n in ORDER[:2]])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        chart = screen.query_one(CompareChart)
        for metric, values in (("eval_loss", (0.07, 0.09)), ("accuracy", (0.71, 0.93))):
            chart.rows = [replace(r, metric_name=metric, final_metric=v) for r, v in zip(chart.rows, values)]
            chart.chart = "metric"
            tops.clear()
            assert chart.bars(60, 10) is not None
            assert set(tops) == ({0.09} if metric == "eval_loss" else {1.0}), metric


async def test_at_80x24_each_of_four_runs_has_its_own_labelled_bar_and_value(runs):
    """A QA walk: at 80x24 the bars of four runs could not be told apart nor matched to their runs (plotext's bars
    ran into each other, every other one labelled, a run with no value left out, no values). Each run has its own
    line, apart from the next: its column title, its bar and its value whole, as the table writes it."""
    import shutil

    from loratui.core.compare import table_rows

    tails = ["0912", "0931", "0950", "1008"]
    names = [f"smollm2-135m-instruct-lora-20261204-{t}" for t in tails]
    for name, source in zip(names, ORDER + ORDER[:1]):
        shutil.copytree(runs / source, runs / name)
    app = compare_app(runs, runs=[runs / n for n in names])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        cells = dict(table_rows(screen.rows))
        for row in ("final eval loss", "active time", "trainable params", "peak GPU memory"):
            await pilot.pause()
            lines = screen_text(app).splitlines()
            at = [i for i, ln in enumerate(lines) if "┤" in ln]
            assert [lines[i].split("┤")[0].strip() for i in at] == tails, (row, lines)
            assert all(b - a == 2 for a, b in zip(at, at[1:])), (row, lines)  # a blank line between two runs
            for i, cell in zip(at, cells[row]):
                assert lines[i].rstrip().endswith(" " + cell), (row, lines[i], cell)
            await pilot.press("n")
        assert "1.4617 so far" in cells["final eval loss"] and "-" in cells["final eval loss"]


async def test_at_80_columns_labels_and_values_read_whole(runs):
    """A QA walk read 'peak GPU memory  - (CP… 4.47 GiB)' and 'train…ogging_steps': the labels get the room the
    values leave (a config key longer than that keeps its end whole), and a value too wide wraps at its spaces."""
    import json
    import shutil

    shutil.copytree(runs / "smollm2-demo", runs / "cpu")
    events = [json.loads(ln) for ln in (runs / "cpu" / "events.jsonl").read_text().splitlines()]
    events = [{**e, "device": "cpu"} if e["kind"] == "started" else e for e in events if e["kind"] != "memory"]
    events.insert(-1, {"kind": "memory", "time": events[-2]["time"], "step": 200, "device": "cpu",
                       "host_peak_gb": 4.47})
    (runs / "cpu" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    config = (runs / "cpu" / "config.yaml").read_text()
    (runs / "cpu" / "config.yaml").write_text(config.replace(
        "  save_steps: 100\n", "  save_steps: 100\n  logging_steps: 2\n  early_stopping_patience: 3\n"))
    app = compare_app(runs, runs=[runs / "cpu", runs / "smollm2-demo", runs / "smollm2-stopped"])
    async with app.run_test(size=(80, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("peak GPU memory"))
        assert "- (CPU run: host" in lines[at] and lines[at + 1].split() == ["4.47", "GiB)"], lines[at:at + 2]
        assert any(ln.split()[:2] == ["train.logging_steps", "2"] for ln in lines), lines
        assert any(ln.split()[:2] == ["train.…stopping_patience", "3"] for ln in lines), lines


async def test_a_classifiers_accuracy_beside_losses_is_written_not_drawn(runs):
    """A QA walk: a classifier's accuracy (0.507) stood as a bar on the 'eval loss' chart beside the losses, on their
    scale. It is written on its line, with what it is, and no bar; the losses keep theirs (the export alike)."""
    from dataclasses import replace

    from loratui.core.compare import to_markdown
    from loratui.ui.widgets.compare_chart import CompareChart

    app = compare_app(runs, runs=[runs / n for n in ORDER[:2]])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        chart = screen.query_one(CompareChart)
        loss, clf = chart.rows
        chart.rows = [replace(loss, metric_name="eval_loss", final_metric=1.0324, state="finished"),
                      replace(clf, metric_name="accuracy", final_metric=0.507, state="finished")]
        chart.chart = "metric"
        lines = chart.bars(78, 10).plain.splitlines()
        assert "█" in lines[0] and lines[0].rstrip().endswith("1.0324")
        acc = next(line for line in lines if "0.507" in line)
        assert "█" not in acc and "accuracy 0.507 (not a loss)" in acc
        md = to_markdown(chart.rows)
        assert "accuracy 0.507 (not a loss)" in md and "│ accuracy 0.507" in md


async def test_a_study_queued_again_keeps_its_earlier_batch_to_compare(runs):
    """A study queued again is a new batch; the picker listed only the newest, so the finished batch before it
    could no longer be opened as a study (a QA walk). Each batch is listed, and opens its own runs."""
    import shutil

    from loratui.core.study import list_study_batches, write_study_tag
    from loratui.ui.widgets.choice_modal import ChoiceModal

    for i, (name, batch) in enumerate([("a-r4", "20260105-090000"), ("a-r16", "20260105-090000"),
                                       ("a-r4-2", "20260106-090000")]):
        shutil.copytree(runs / "smollm2-demo", runs / name)
        write_study_tag(runs / name, "a", batch, name, {"lora.r": 4}, i)
    assert list_study_batches(runs) == [("a", "20260106-090000", 1), ("a", "20260105-090000", 2)]
    app = host_app(lambda: CompareScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        assert [r.name for r in screen.rows] == ["a-r4-2"]  # the newest batch first
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, ChoiceModal), what="picker")
        app.screen.dismiss("a\t20260105-090000")
        await wait_until(pilot, lambda: [r.name for r in screen.rows] == ["a-r4", "a-r16"], what="the earlier batch")
        assert screen.heading == "study a · 20260105-090000"


def _axis_labels(lines: list[str]) -> tuple[list[float], list[float]]:
    """The plot's y tick labels (left of '┤') and x tick labels (the line under the frame's '└')."""
    ys = [float(ln.split("┤")[0]) for ln in lines if "┤" in ln and ln.split("┤")[0].strip()]
    bottom = next(i for i, ln in enumerate(lines) if "└" in ln)
    xs = [float(t) for t in lines[bottom + 1].split()]
    return ys, xs


async def test_a_single_evaluation_is_drawn_on_a_range_around_it(runs):
    """The walk: a run with one evaluation (the base model's, at step 0) drew its step axis from -1 to 1, and a
    single value spans plotext's 0.5x to 1.5x (-1 to 1 for a 0). The axes fit the point: steps from 0, the loss
    a little either side of its value."""
    import json
    import shutil

    shutil.copytree(runs / "smollm2-stopped", runs / "one-eval")
    events, kept = [json.loads(ln) for ln in (runs / "one-eval" / "events.jsonl").read_text().splitlines()], []
    for e in events:
        if e["kind"] == "eval":
            if any(k["kind"] == "eval" for k in kept):
                continue
            e = {**e, "step": 0}
        kept.append(e)
    (runs / "one-eval" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    loss = next(e["eval_loss"] for e in kept if e["kind"] == "eval")
    app = compare_app(runs, runs=[runs / "one-eval"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="compare")
        await pilot.press("N")  # the eval-loss curves
        await pilot.pause()
        ys, xs = _axis_labels(screen_text(app).splitlines())
    assert ys and all(0.8 * loss <= y <= 1.2 * loss for y in ys), (loss, ys)
    assert xs and min(xs) == 0 and all(x >= 0 for x in xs), xs


async def test_at_80_columns_a_long_name_beside_a_short_one_leaves_room_for_every_run(runs):
    """QA walk: names with nothing in common ('smollm2-135m-instruct-lora-20261205-122349', 'r8run', ...) made each
    column as wide as its full name; at 80 columns the third run was off screen. Each title is cut in the middle
    (its date and time stay) to its values' width."""
    app = renamed_compare(runs, ["smollm2-135m-instruct-lora-20261205-122349", "r8run",
                                 "smollm2-135m-instruct-lora-20261205-124351"])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        header = screen_text(app).splitlines()[1]
        assert "122349" in header and "r8run" in header and "124351" in header, header
