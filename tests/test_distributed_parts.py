"""Pieces of a run on several processes checked below the engine, on CPU with gloo: the ranks' stop/checkpoint
agreement (two spawned processes) and FSDP's gathering of the LM head for Liger's fused loss (one torchrun of two
ranks). The engine's own several-process runs are in tests/test_distributed.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def _agree_worker(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from loratui.train.distributed import Agreement, World

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    agree = Agreement(World(rank=rank, local_rank=rank, size=2))
    seen = []
    for step in range(1, 9):
        # rank 1 alone asks for a checkpoint at step 3 (once) and for a stop from step 5 on (it stays asked)
        mine = (rank == 1 and step >= 5, rank == 1 and step == 3)
        stop, checkpoint = agree(*mine)
        seen.append((step, stop, checkpoint))
    agree.wait()
    out.put((rank, seen))
    dist.destroy_process_group()


def test_ranks_act_on_a_request_at_the_same_step_one_step_later():
    """The stop/checkpoint agreement is pipelined (no host barrier a step): a request made by one rank at step N
    reaches every rank at step N+1, a checkpoint-now exactly once."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_agree_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert results[0] == results[1]
    seen = results[0]
    assert [s for s, _, ck in seen if ck] == [4]
    assert [s for s, stop, _ in seen if stop] == [6, 7, 8]


FSDP_CASES = [("nohook", "frozen"), ("hook", "frozen"), ("hook", "trained")]


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory) -> dict:
    """The FSDP head cases by one torchrun of two ranks (one torch import; a fresh model a case; the failing one last)."""
    import json

    out = tmp_path_factory.mktemp("fsdp")
    script = Path(__file__).resolve().parent / "fixtures" / "fsdp_head.py"
    cases = [f"{h}:{m}" for h, m in sorted(FSDP_CASES, key=lambda c: c[0] == "nohook")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           str(out), *cases], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    files = {case: out / f"{case[0]}-{case[1]}.json" for case in FSDP_CASES}  # else what torchrun printed:
    return {case: json.loads(f.read_text()) if f.is_file() else proc.stdout[-2000:] + proc.stderr[-2000:]
            for case, f in files.items()}


@pytest.mark.parametrize("hook,head", FSDP_CASES)
def test_fsdp_gathers_the_head_for_the_fused_loss(fsdp_results, hook, head):
    """Under FSDP2, Liger's fused cross-entropy reads the LM head's weight without calling the head. accelerate
    gathers a PEFT model's head only when the head is called, so QLoRA with FSDP on 2x H200 failed with "mixed
    torch.Tensor and DTensor" (reproduced here on CPU). With the final norm's hook the head is gathered in time:
    two steps train, and a trained head's gradient is the one a single process gets on both ranks' data."""
    result = fsdp_results[hook, head]
    assert isinstance(result, dict), result
    if hook == "nohook":
        assert "mixed torch.Tensor and DTensor" in result["error"]
        return
    assert result["hooked"] and result["error"] is None, result
    assert len(result["losses"]) == 2
    if head == "trained":
        assert result["head_grad_matches"]
