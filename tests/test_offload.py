"""Setup's heavy calls run in a helper process: the app process never imports torch, and errors come back whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_setup_calls_keep_torch_out_of_the_app_process(tiny_llama):
    script = textwrap.dedent(f"""
        import sys
        from loratui.core.config import RunConfig
        from loratui.core.errors import ModelError
        from loratui.ui.widgets import setup_core
        cfg = RunConfig()
        cfg.model.name = {str(tiny_llama)!r}
        cfg.lora.r = 4
        assert setup_core.count_params(cfg).trainable > 0
        assert len(setup_core.estimate_memory(cfg).rows) == 3
        assert "q_proj" in setup_core.list_linear_layers(cfg)
        assert setup_core.preview(cfg, 1)[0].n_tokens > 0
        setup_core.preflight(cfg)
        cfg.model.name = "/no/such/model"
        try:
            setup_core.count_params(cfg)
        except ModelError as err:
            assert err.field == "model.name" and "no such model folder" in str(err)
        else:
            raise AssertionError("no error")
        heavy = [m for m in ("torch", "transformers", "peft", "datasets") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_nothing_the_helper_prints_reaches_the_apps_terminal():
    """The helper inherited the terminal as fds 1 and 2: datasets' 'dropping empty rows: 100%|...' bar was drawn
    over the Setup screen while the first estimate ran."""
    script = textwrap.dedent("""
        from loratui.ui import offload
        assert offload.call("os:write", 2, b"PROGRESS-BAR-ON-STDERR\\n") > 0
        assert offload.call("os:write", 1, b"PRINTED-ON-STDOUT\\n") > 0
        offload.shutdown()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.stdout, proc.stderr[-2000:])
    assert "PROGRESS-BAR" not in proc.stderr


def test_the_helper_leaves_no_semaphore_behind():
    """tqdm (datasets' bars, in the helper) made a multiprocessing lock; the helper ends by SIGTERM, so it was never
    released and the resource tracker printed '1 leaked semaphore objects' on the terminal after the app (QA walk)."""
    script = textwrap.dedent("""
        from loratui.ui import offload
        assert offload.call("tqdm.contrib.concurrent:thread_map", abs, [-1]) == [1]  # a progress bar's lock
        offload.shutdown()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.stdout, proc.stderr[-2000:])
    assert "leaked semaphore" not in proc.stderr, proc.stderr[-2000:]
