"""``loratui compare``: a study's runs (a detached study's, finished or still going) or the runs named, side by side,
with the numbers the app's Compare screen exports (``e``)."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

from fixtures import RUNS, make_live_run, recorded_events
from loratui.cli import main as cli_main
from loratui.core import compare
from loratui.core.study import study_runs, write_study_tag


@pytest.fixture
def runs(tmp_path) -> Path:
    """A study 's' half done: one run finished (the recorded demo run), one still training (this process is its
    engine), as a detached study is while its runner works; and a run of no study."""
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(RUNS / "smollm2-demo", folder / "s-r8")
    head = [e for e in recorded_events() if e["kind"] in ("started", "step", "eval") and e.get("step", 0) <= 100]
    make_live_run(folder, "s-r16", pid=os.getpid(), events=head)
    shutil.copytree(RUNS / "smollm2-stopped", folder / "other")
    for i, (name, r) in enumerate((("s-r8", 8), ("s-r16", 16))):
        write_study_tag(folder / name, "s", "20260105-090000", f"r{r}", {"lora.r": r}, i)
    return folder


def test_a_study_still_going_prints_as_the_app_exports_it(runs, capsys):
    assert cli_main(["compare", "--study", "s", "--runs-dir", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# Study s\n")
    assert "| | r8 | r16 |" in out and "| run | `s-r8` | `s-r16` |" in out
    assert "| state | finished | " in out and "| final eval loss | 1.0324 | 1.4" in out
    assert " so far |" in out  # the live run's latest evaluation
    assert "1 of 2 runs not done yet (s-r16)" in err
    # the numbers are the app's: its export reads the rows with a RowCache and writes them with compare.export
    assert cli_main(["compare", "--study", "s", "--runs-dir", str(runs), "--csv"]) == 0
    printed = capsys.readouterr().out
    paths = study_runs(runs, "s")
    assert printed == compare.to_csv(compare.RowCache().read(paths))
    assert [r["run"] for r in csv.DictReader(io.StringIO(printed))] == ["s-r8", "s-r16"]


def test_with_nothing_named_the_newest_study_and_its_export(runs, tmp_path, capsys, monkeypatch):
    # the live run's active and wall time tick to 'now': the two exports, a moment apart, read one clock (they
    # differed when a second turned between them: '8018:43:29' beside '8018:43:30')
    import time
    from types import SimpleNamespace

    from loratui.core import compare_rows

    now = time.time()
    monkeypatch.setattr(compare_rows, "time", SimpleNamespace(time=lambda: now))
    assert cli_main(["compare", "--runs-dir", str(runs), "--export", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "# Study s" in out and f"exported {tmp_path / 'out' / 's.csv'}" in out
    app = compare.export(compare.RowCache().read(study_runs(runs, "s")), tmp_path / "app", title="Study s", stem="s")
    assert (tmp_path / "out" / "s.csv").read_text() == app[0].read_text()
    assert (tmp_path / "out" / "s.md").read_text() == app[1].read_text()


def test_runs_named_by_name_or_folder(runs, capsys):
    assert cli_main(["compare", "s-r8", str(runs / "other"), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 2 selected runs\n") and "| | r8 | other |" in out and "| run | `s-r8` | `other` |" in out
    assert "| train.max_steps | 200 | 400 |" in out


@pytest.mark.parametrize("argv, said", [
    (["s-r8", "nope", "gone"], "error: RUN: no run named nope, gone (no such folder, nor a run of that name in"),
    (["--study", "t"], "error: --study: no study named 't' in"),
    (["s-r8", "--study", "s"], "error: --study: give runs or --study, not both"),
])
def test_what_is_not_there_is_named(runs, capsys, argv, said):
    assert cli_main(["compare", *argv, "--runs-dir", str(runs)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(said) and len(err.strip().splitlines()) == 1 and out == ""
    if "--study" in argv and "t" in argv:
        assert "studies there: s" in err


def test_no_study_in_the_runs_folder_shows_the_newest_runs_as_the_app_does(tmp_path, capsys):
    assert cli_main(["compare", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RUN: no runs in") and "loratui runs" in err
    for name in ("smollm2-demo", "smollm2-stopped"):
        shutil.copytree(RUNS / name, tmp_path / name)
    assert cli_main(["compare", "--runs-dir", str(tmp_path), "--csv"]) == 0
    printed = capsys.readouterr().out
    paths, heading, study = compare.default_selection(tmp_path)  # what the app's Compare opens on
    assert heading == "newest runs" and study is None and len(paths) == 2
    assert printed == compare.to_csv(compare.RowCache().read(paths))
