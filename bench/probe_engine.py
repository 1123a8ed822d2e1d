"""The engine with a probe (bench only: the engine itself carries none): after saving, the trained model's logits
on a fixed input go to RUN/probe.pt, so bench/gpu_engine.py can check that a reloaded adapter reproduces them.

Usage: python bench/probe_engine.py CONFIG.yaml   (LORATUI_PROBE=reload also reloads in this same process)
"""

from __future__ import annotations

import os
import sys

from loratui.core.config import load_config
from loratui.core.runs import create_run
from loratui.train.engine import Engine


class ProbedEngine(Engine):
    def save_output(self):
        out = super().save_output()
        self.save_probe()
        return out

    def save_probe(self) -> None:
        """Logits of the trained model on a fixed input (bench/tests compare a reloaded adapter against them)."""
        import torch

        # accelerate wraps forward in autocast for mixed precision: unwrap to compare like-for-like with a reload
        model = self.trainer.accelerator.unwrap_model(self.trainer.model, keep_fp32_wrapper=False).eval()
        ids = torch.arange(1, 33).unsqueeze(0) * 37 % max(8, model.config.vocab_size - 1) + 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device)).logits.float().cpu()
        probe = {"input_ids": ids, "logits": logits}
        if os.environ.get("LORATUI_PROBE") == "reload":  # diagnostics: reload the adapter in this same process
            from peft import PeftModel

            from loratui.train import models

            base = models.load_model(self.cfg, models.resolve_model(self.cfg.model), models.choose_precision(self.cfg))
            if not self.cfg.quantized:
                base = base.to(model.device)
            if self.cfg.quantized:
                from peft import prepare_model_for_kbit_training

                base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
            again = PeftModel.from_pretrained(base, str(self.run_dir.adapter_dir)).eval()
            with torch.no_grad():
                probe["same_process_logits"] = again(input_ids=ids.to(model.device)).logits.float().cpu()
                probe["trained_again_logits"] = model(input_ids=ids.to(model.device)).logits.float().cpu()
        torch.save(probe, self.run_dir.path / "probe.pt")


if __name__ == "__main__":
    os.environ.setdefault("LORATUI_PROBE", "1")
    raise SystemExit(ProbedEngine(create_run(load_config(sys.argv[1]))).run())
