"""The run protocol: typed events written as strict JSON, a reader that survives anything, one fold for every view."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loratui.core import protocol
from loratui.core.fold import RunFold, fold
from loratui.core.protocol import EventTail, EventWriter, ProtocolError, RunState, RunStatus, parse_line

REPO = Path(__file__).resolve().parents[1]


def strict_loads(line: str):
    def refuse(token):
        raise ValueError(f"bare {token} is not JSON")

    return json.loads(line, parse_constant=refuse)


# -- writing -----------------------------------------------------------------------------------------------------------


def test_events_are_always_valid_json_nan_and_inf_become_null(tmp_path):
    w = EventWriter(tmp_path / "events.jsonl")
    ev = w.emit("step", step=3, max_steps=10, loss=float("nan"), lr=float("inf"), grad_norm=-math.inf,
                epoch=0.5, tokens_per_s=12.5)
    w.emit("finished", step=10, train_loss=float("nan"), eval_loss=None, adapter=Path("adapter"))
    w.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    step, finished = [strict_loads(line) for line in lines]  # a strict parser accepts every line
    assert step["loss"] is None and step["lr"] is None and step["grad_norm"] is None and step["epoch"] == 0.5
    assert ev["loss"] is None
    assert finished["train_loss"] is None and finished["adapter"] == "adapter"


def test_emit_validates_through_the_models(tmp_path):
    w = EventWriter(tmp_path / "events.jsonl")
    with pytest.raises(ProtocolError, match="unknown event kind 'bogus'"):
        w.emit("bogus", step=1)
    with pytest.raises(ProtocolError, match="step"):
        w.emit("step", step="three")
    w.close()
    assert (tmp_path / "events.jsonl").read_text() == ""  # nothing invalid reached the file


def test_extra_fields_travel_for_the_next_engines(tmp_path):
    w = EventWriter(tmp_path / "events.jsonl")
    w.emit("started", model="m", method="lora", max_steps=4, world_size=2, gpus=["0", "1"], ranks={"0": "ok"})
    w.close()
    [ev] = EventTail(tmp_path / "events.jsonl").poll()
    assert isinstance(ev, protocol.StartedEvent)
    assert ev.world_size == 2 and ev["gpus"] == ["0", "1"] and ev.get("ranks") == {"0": "ok"}
    assert ev["kind"] == "started" and ev.get("missing", 7) == 7


# -- reading -----------------------------------------------------------------------------------------------------------


def test_tail_skips_and_counts_what_it_cannot_read(tmp_path):
    path = tmp_path / "events.jsonl"
    good = json.dumps({"kind": "step", "time": 1.0, "step": 1, "loss": 2.0})
    path.write_bytes(b"\n".join([
        good.encode(),
        b"\xff\xfe\x00\x81binary garbage",
        b"[1, 2, 3]",
        b'{"kind": "mystery", "time": 2}',
        b'{"kind": "step", "step": "x"}',
        b'{"kind": "step", "time": 3, "step": 2, "loss": NaN}',  # an older engine's bare NaN: read as null
        b"",
        b'{"kind": "eval", "time": 4, "step": 2, "eval_lo',  # half-written: waits for its newline
    ]))
    tail = EventTail(path)
    events = tail.poll()
    assert [e.kind for e in events] == ["step", "step"]
    assert events[1].loss is None
    assert tail.skipped == 4
    assert "4 unreadable lines skipped" in tail.problem and "line 2: not JSON" in tail.problem
    with open(path, "ab") as fh:
        fh.write(b'ss": 1.5}\n')
    [ev] = tail.poll()
    assert ev.kind == "eval" and ev.eval_loss == 1.5 and tail.skipped == 4


def test_parse_line_errors_say_what_is_wrong():
    with pytest.raises(ProtocolError, match="not JSON"):
        parse_line(b"\xff")
    with pytest.raises(ProtocolError, match="JSON object, not list"):
        parse_line("[1]")
    with pytest.raises(ProtocolError, match="step event: step"):
        parse_line('{"kind": "step", "step": [1]}')


def test_status_json_of_the_wrong_shape_is_named():
    with pytest.raises(ProtocolError, match="holds a list"):
        protocol.parse_status([1, 2])
    with pytest.raises(ProtocolError, match="status.json: pid"):
        protocol.parse_status({"state": "running", "pid": "1234"})
    with pytest.raises(ProtocolError, match="status.json: state"):
        protocol.parse_status({"state": 5})
    assert protocol.parse_status({"state": "running", "pid": 12, "pid_started": 3}).pid_started == 3.0


# -- the fold ----------------------------------------------------------------------------------------------------------


def losses(n: int, start: int = 1, base: float = 2.0) -> list[tuple[int, float]]:
    return [(i, base - i / 100) for i in range(start, n + 1)]


def stopped_then_resumed() -> list[dict]:
    """30 steps: the first process trains to 20 (log every step, a step a 10 s), stops; a second one resumes."""
    ev: list[dict] = [{"kind": "phase", "time": 0.0, "phase": "checking"},
                      {"kind": "started", "time": 5.0, "max_steps": 30, "model": "m", "method": "lora"}]
    ev += [{"kind": "step", "time": 5.0 + 10 * i, "step": i, "max_steps": 30, "loss": loss, "tokens_per_s": 100.0}
           for i, loss in losses(20)]
    ev += [{"kind": "eval", "time": 206.0, "step": 20, "eval_loss": 1.5},
           {"kind": "checkpoint", "time": 207.0, "step": 20, "path": "checkpoints/checkpoint-20"},
           {"kind": "stopped", "time": 210.0, "step": 20, "adapter": "adapter"}]
    # the user comes back an hour later
    ev += [{"kind": "phase", "time": 4000.0, "phase": "checking"},
           {"kind": "started", "time": 4005.0, "max_steps": 30, "resumed": True},
           {"kind": "resumed", "time": 4006.0, "step": 20, "checkpoint": "checkpoints/checkpoint-20"}]
    ev += [{"kind": "step", "time": 4006.0 + 10 * (i - 20), "step": i, "max_steps": 30, "loss": loss,
            "tokens_per_s": 120.0} for i, loss in losses(30, start=21)]
    ev += [{"kind": "eval", "time": 4107.0, "step": 30, "eval_loss": 1.25, "perplexity": 3.49},
           {"kind": "finished", "time": 4110.0, "step": 30, "adapter": "adapter", "runtime_s": 104.0,
            "train_loss": 0.022, "eval_loss": None}]
    return ev


def test_a_resumed_run_is_summed_over_its_whole_life():
    s = fold(stopped_then_resumed())
    assert s.state == RunState.FINISHED and s.step == 30 and s.max_steps == 30 and s.progress == 1.0
    assert s.elapsed == pytest.approx(210.0 + 110.0)  # both parts, not the hour between, not only the last part
    assert s.train_loss == pytest.approx(sum(loss for _, loss in losses(30)) / 30)  # the steps logged, not 0.022
    # the last scheduled eval fell on the final step, so the engine did not evaluate again: the summary keeps it
    assert s.final_eval == {"eval_loss": 1.25, "perplexity": 3.49}
    assert s.best_eval_loss == 1.25 and s.best_eval_step == 30
    assert s.resumes == 1 and s.tokens_per_s == 120.0 and s.eta == 0.0


def test_steps_trained_again_after_a_resume_replace_the_old_ones():
    ev = [{"kind": "started", "time": 0, "max_steps": 10}]
    ev += [{"kind": "step", "time": i, "step": i, "loss": 5.0} for i in range(1, 9)]  # checkpoint at 6, crash at 8
    ev += [{"kind": "started", "time": 100, "max_steps": 10}, {"kind": "resumed", "time": 101, "step": 6}]
    ev += [{"kind": "step", "time": 101 + i, "step": i, "loss": 1.0} for i in range(7, 11)]
    s = fold(ev, {"state": "finished"})
    assert s.train_loss == pytest.approx((6 * 5.0 + 4 * 1.0) / 10)
    assert s.elapsed == pytest.approx(8 + 11)  # the crashed part ends at its last event, not when the next began


def test_the_time_a_crashed_run_lay_dead_is_no_parts_time():
    """A QA walk: killed at step 6 after ~45 s of training, a resume that failed at once 4:45 later made every view
    say 5:26 of active time. Each engine says "checking" first: a part that fails before "started" is its own."""
    ev = [{"kind": "phase", "time": 0, "phase": "checking"}, {"kind": "phase", "time": 2, "phase": "loading model"},
          {"kind": "started", "time": 5, "max_steps": 30}]
    ev += [{"kind": "step", "time": 5 + 7 * i, "step": i, "loss": 1.0} for i in range(1, 7)]  # killed after 47 s
    ev += [{"kind": "phase", "time": 300, "phase": "checking"},
           {"kind": "failed", "time": 301, "error": "RunError", "message": "m", "hint": "h"}]
    s = fold(ev)
    assert s.state == RunState.FAILED and s.elapsed == pytest.approx(47 + 1)
    ev[-1] = {"kind": "phase", "time": 302, "phase": "loading model"}  # this time it trains again from step 0
    ev += [{"kind": "started", "time": 310, "max_steps": 30}, {"kind": "resumed", "time": 310, "step": 0}]
    ev += [{"kind": "step", "time": 310 + i, "step": i, "loss": 0.5} for i in range(1, 31)]
    ev += [{"kind": "finished", "time": 345, "step": 30, "adapter": "adapter"}]
    s = fold(ev)
    assert s.state == RunState.FINISHED and s.elapsed == pytest.approx(47 + 45) and s.train_loss == 0.5
    assert s.wall == pytest.approx(345)


def test_elapsed_and_eta_tick_between_steps():
    ev = [{"kind": "started", "time": 1000.0, "max_steps": 100}]
    ev += [{"kind": "step", "time": 1000.0 + 2 * i, "step": i, "loss": 1.0} for i in range(1, 11)]
    f = RunFold().add_all(ev)
    at_step = f.summary(live_pid=4242, live_since=999.0, now=1020.0)
    later = f.summary(live_pid=4242, live_since=999.0, now=1030.0)
    assert at_step.state == RunState.RUNNING
    assert at_step.elapsed == pytest.approx(20.0) and later.elapsed == pytest.approx(30.0)
    assert at_step.eta == pytest.approx(90 * 2.0) and later.eta == pytest.approx(90 * 2.0 - 10)
    # the engine's own figure, when it gives one, is the one shown (its progress line prints the same)
    f.add({"kind": "step", "time": 1022.0, "step": 11, "loss": 1.0, "eta_s": 500.0})
    assert f.summary(live_pid=4242, live_since=999.0, now=1022.0).eta == 500.0
    # gone without a final event: crashed, the clock stops at the last event
    dead = f.summary(now=5000.0)
    assert dead.state == RunState.CRASHED and dead.elapsed == pytest.approx(22.0) and dead.eta is None


@pytest.mark.parametrize("events, status, live, expected", [
    ([], None, None, "waiting"),  # the word the queue uses for the same run (QA walk: 'created' in loratui runs)
    ([], {"state": "created"}, None, "waiting"),
    ([], {"state": "running", "pid": 5}, None, "crashed"),  # launched and gone before a word
    ([], {"state": "running"}, 10.0, "starting"),
    ([{"kind": "started", "time": 1}], {"state": "running"}, 0.5, "running"),
    ([{"kind": "started", "time": 1}], {"state": "running"}, None, "crashed"),
    ([{"kind": "started", "time": 1}, {"kind": "finished", "time": 9}], None, None, "finished"),  # status deleted
    ([{"kind": "started", "time": 1}, {"kind": "finished", "time": 9}], {"state": "running"}, 0.5, "finished"),
    ([{"kind": "started", "time": 1}, {"kind": "stopped", "time": 9}], {"state": "stopped"}, 20.0, "starting"),
    ([{"kind": "started", "time": 1}], {"state": "stopped", "updated": 9}, None, "stopped"),  # event line partial
    ([{"kind": "started", "time": 1}, {"kind": "failed", "time": 2, "message": "boom"}], None, None, "failed"),
])
def test_state_newest_truth_wins(events, status, live, expected):
    s = fold(events, status, live_pid=1234 if live is not None else None, live_since=live)
    assert s.state == expected


def test_failed_run_carries_its_message():
    s = fold([{"kind": "started", "time": 1},
              {"kind": "failed", "time": 2, "error": "OutOfMemoryError", "message": "out of GPU memory",
               "hint": "halve train.batch_size", "field": "train.batch_size"}])
    assert s.state == "failed" and s.error == "out of GPU memory" and s.failure["hint"] == "halve train.batch_size"


def test_recorded_runs_fold_without_skipping():
    for run in ("smollm2-demo", "smollm2-stopped", "smollm2-bs64-oom"):
        tail = EventTail(REPO / "tests" / "fixtures" / "runs" / run / "events.jsonl")
        events = tail.poll()
        assert events and tail.skipped == 0, run


# -- the contract ------------------------------------------------------------------------------------------------------


def test_contracts_doc_is_generated_from_the_models():
    text = (REPO / "docs" / "CONTRACTS.md").read_text()
    begin, end = text.index(protocol.CONTRACT_BEGIN), text.index(protocol.CONTRACT_END) + len(protocol.CONTRACT_END)
    assert text[begin:end] == protocol.contract_markdown(), (
        "docs/CONTRACTS.md drifted from loratui/core/protocol.py: run python -m loratui.core.protocol")
    for kind in protocol.EVENT_KINDS:
        assert f"- `{kind}`:" in text
    for name in RunStatus.model_fields:
        assert name in text


def test_contracts_doc_names_the_preference_reward_keys():
    """Issue 20: a preference run's step and eval events carry TRL's reward figures; the contract says which."""
    from loratui.core.preference import REWARD_KEYS

    text = (REPO / "docs" / "CONTRACTS.md").read_text()
    assert all(f"`{key}`" in text for key in REWARD_KEYS) and "method.objective" in text


def test_state_colours_live_in_one_place():
    from loratui.ui.screens import monitor, runs

    assert not hasattr(monitor, "STATE_STYLES") and not hasattr(runs, "STATE_STYLES")
    assert set(protocol.STATE_STYLES) == set(RunState)


# -- fuzz -------------------------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=120) | st.sampled_from([
    b'{"kind": "step", "step": 1}\n', b'{"kind": "eval", "eval_loss": NaN}\n', b"\n", b'{"kind": "finished"',
    b"}\n", b"\xff\xfe\n", b'{"kind": "started", "max_steps": "x"}\n']), max_size=12))
def test_fuzz_the_events_reader_never_fails(tmp_path, chunks):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    tail = EventTail(path)
    seen = []
    for chunk in chunks:
        with open(path, "ab") as fh:
            fh.write(chunk)
        seen += tail.poll()
    assert all(isinstance(e, protocol.Event) for e in seen)
    s = fold(seen)  # and the fold takes whatever was read
    assert s.state in set(RunState) and tail.skipped >= 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True).filter(
    lambda k: k not in ("kind", "time")), json_values, max_size=4),
    loss=st.floats(allow_nan=True, allow_infinity=True) | st.none())
def test_fuzz_what_the_engine_writes_is_strict_json_or_refused(tmp_path, extra, loss):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    w = EventWriter(path)
    try:
        w.emit("eval", step=1, eval_loss=loss, **extra)
    except ProtocolError:
        pass  # refused as a whole: nothing half-written
    w.close()
    for line in path.read_text().splitlines():
        strict_loads(line)
        assert parse_line(line).kind == "eval"
