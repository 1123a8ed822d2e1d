"""The memory fit on bench/speed.py's default configs, with the real estimate, on the budgets users' cards give:
whatever it chooses, the engine runs (its own checks pass on the chosen config) and the run fits the budget. Round
12's fit chose wide loss chunks after turning Liger off, which the engine then refused: 8B QLoRA with loratui's
defaults failed at start on an 80 GB card."""

from __future__ import annotations

import pytest

from bench_configs import bench_cfg
from loratui.train import fit, fit_run, speed

GiB = 1024**3
CASES = [  # shape, method, batch, variant, budget GiB (92% of a card's free memory, or a memory_budget)
    ("8b", "qlora", 4, "default", 72.4),  # an 80 GB card: room (Liger off, graphs)
    ("8b", "qlora", 4, "default", 128.0),  # a 141 GB card
    ("8b", "qlora", 4, "default", 22.0),  # a 24 GB card
    ("8b", "qlora", 4, "default", 14.5),  # a 16 GB card
    ("1b", "lora", 16, "default", 72.4),
    ("8b", "lora", 16, "lora.r=16+lora.alpha=32+lora.preset=llama-all", 72.4),
]


@pytest.fixture
def on_a_gpu(h200, monkeypatch):
    """The fit as the engine runs it on a CUDA card (bf16), from this CPU."""
    import torch

    from loratui.train import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models, "choose_precision", lambda cfg: "bf16")


@pytest.mark.parametrize("shape,method,batch,variant,budget", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4]:g}GiB" for c in CASES])
def test_what_the_fit_chooses_the_engine_runs(bench_env, on_a_gpu, shape, method, batch, variant, budget):
    cfg = bench_cfg(bench_env, shape, method, batch, 50, variant)
    chosen = fit.plan(cfg, int(budget * GiB), estimator=fit_run.estimator_for(cfg))
    assert chosen.fits and chosen.estimate <= budget * GiB, chosen.message()
    speed.resolve(chosen.apply(cfg), cuda=True, model_type="llama")  # raises where the engine would refuse the fit's own choice


@pytest.mark.parametrize("shape,batch,variant", [("1b", 16, "default"),
                                                 ("8b", 16, "lora.r=16+lora.alpha=32+lora.preset=llama-all")])
def test_with_room_a_lora_run_gets_wide_loss_chunks(bench_env, on_a_gpu, shape, batch, variant):
    """Liger's loss in wide chunks (1B LoRA +9% tokens/s, round 12) where an 80 GB card has room: from round 13 to 15
    the fit asked the engine's checks without the model's type, read Liger off and never chose them on a GPU."""
    cfg = bench_cfg(bench_env, shape, "lora", batch, 50, variant)
    chosen = fit.plan(cfg, int(72.4 * GiB), estimator=fit_run.estimator_for(cfg))
    assert chosen.wide_loss_chunks and "wide loss chunks" in chosen.message(), chosen.message()
    assert speed.resolve(chosen.apply(cfg), cuda=True, model_type="llama").wide_loss_chunks
