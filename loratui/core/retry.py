"""Retry a run that ran out of GPU memory: half the micro-batch, twice the gradient accumulation (the same effective
batch, so the same schedule and step count), resumed from its last complete checkpoint. Light module: no torch."""

from __future__ import annotations

from loratui.core.errors import RunError
from loratui.core.runs import RunDir, launch_detached


def oom_failure(run: RunDir) -> dict | None:
    """The run's last 'failed' event if it was an out-of-memory failure (and nothing came after it)."""
    for ev in reversed(run.events()):
        kind = ev.get("kind")
        if kind == "failed":
            text = f"{ev.get('error', '')} {ev.get('message', '')}".lower()
            return ev if ev.get("oom") or "outofmemory" in text or "out of gpu memory" in text else None
        if kind in ("started", "resumed", "finished", "stopped"):
            return None
    return None


def halved_batch(batch_size: int, grad_accum: int) -> tuple[int, int]:
    """(micro-batch, grad_accum) with the same effective batch; a micro-batch of 1 cannot be halved."""
    if batch_size <= 1:
        raise RunError("the micro-batch is already 1 and cannot be halved", field="train.batch_size",
                       hint="enable train.gradient_checkpointing, lower data.max_length, or use method qlora")
    half = batch_size // 2
    # an odd micro-batch rounds down; accumulation rounds up so the effective batch never shrinks
    accum = -(-(batch_size * grad_accum) // half)
    return half, accum


def retry_after_oom(run: RunDir, *, env: dict | None = None) -> int:
    """Rewrite the run's config (micro-batch halved, grad_accum doubled) and start the engine again, resuming from
    the newest complete checkpoint (from the start when there is none). Returns the engine's pid."""
    if run.state().active:
        raise RunError(f"{run.name} is still running", field="run", hint="stop it first")
    if oom_failure(run) is None:
        raise RunError(f"{run.name} did not fail with out-of-memory", field="run",
                       hint="retry with a smaller batch is only offered after an out-of-memory failure")
    cfg = run.config()
    cfg.train.batch_size, cfg.train.grad_accum = halved_batch(cfg.train.batch_size, cfg.train.grad_accum)
    cfg.save(run.config_path, full=True)
    resume = run.latest_checkpoint() is not None
    return launch_detached(run, resume=resume, env=env)
