"""The playground's model, as its generation process holds it: a base model loaded once with the adapter toggled
(peft's ``disable_adapter()``), answers streamed token by token, labels for classifiers, held-out batches scored.
Events go out through ``emit`` (JSON lines on stdout in the process: ``loratui.train.playground_worker``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from loratui.core.errors import LoratuiError
from loratui.train.examples import held_out_rows, render_example
from loratui.train.export_check import run_config

Emit = Callable[..., None]


def _out(kind: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **data}, default=str) + "\n")
    sys.stdout.flush()


def memory_now(device: str) -> dict:
    """What this process holds: host RSS, and CUDA allocated/reserved when on a GPU (bytes)."""
    out: dict[str, Any] = {}
    try:
        import psutil

        out["rss"] = psutil.Process().memory_info().rss
    except Exception:
        pass
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        out["cuda_allocated"] = torch.cuda.memory_allocated()
        out["cuda_reserved"] = torch.cuda.memory_reserved()
    return out


def _safe_weights(models, resolved, allow_pickle: bool) -> dict:
    """Pickle-only weights need the opt-in (unpickling can run code); hub models load safetensors only."""
    if resolved.local:
        models.check_pickle(resolved.path, allow_pickle)
    return {} if allow_pickle or resolved.gguf_file else {"use_safetensors": True}


class Playground:
    def __init__(self, emit: Emit = _out):
        self.emit = emit
        self.model = None
        self.tokenizer = None
        self.has_adapter = False
        self.task = "causal-lm"
        self.labels: list[str] | None = None
        self.device = "cpu"
        self.run_cfg = None
        self.default_batch_file: str | None = None
        self.held_out = None  # the rows the run held out of its data (validation_fraction), for a batch
        self.stop = threading.Event()
        self.gguf = None  # a GGUF export in llama.cpp, the third side (loratui.train.playground_gguf)

    # -- loading --------------------------------------------------------------------------------------------------
    def load(self, model: str, device: str = "auto", gpu_busy: str | None = None, base: str | None = None,
             allow_pickle: bool = False) -> dict:
        import torch

        from loratui.core.config import ModelSection
        from loratui.train import models

        t0 = time.time()
        note = ""
        if device == "auto":
            if torch.cuda.is_available() and not gpu_busy:
                device = "cuda"
            else:
                device = "cpu"
                if torch.cuda.is_available():
                    note = f"GPU in use by {gpu_busy}: running on the CPU"
        self.device = device
        dtype = torch.float32
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        before = memory_now(device)
        self.emit("loading", what=model, device=device)
        path = Path(model).expanduser()
        self.load_gguf(None, quiet=True)  # another model: the GGUF is checked again against it, if asked for
        self.model = self.tokenizer = None
        self.labels, self.has_adapter = None, False
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            from loratui.train.merge import adapter_base, adapter_tokenizer, check_adapter

            check_adapter(path, allow_pickle=allow_pickle)  # incomplete or pickle-only: one line, nothing loaded
            section, info = adapter_base(path, base)
            self.task, labels = section.task, info.get("labels")
            resolved = models.resolve_model(section)
            kwargs: dict[str, Any] = _safe_weights(models, resolved, allow_pickle)
            if self.task == "seq-cls":
                kwargs["num_labels"] = section.num_labels
                if labels and len(labels) == section.num_labels:
                    kwargs.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
            base_model = models.auto_class(self.task).from_pretrained(resolved.path, dtype=dtype,
                                                                        **resolved.kwargs(), **kwargs)
            self.model = PeftModel.from_pretrained(base_model, str(path))
            self.tokenizer = adapter_tokenizer(path, resolved)
            self.has_adapter = True
            base_name = section.name
        else:
            from transformers import AutoConfig, AutoTokenizer

            meta: dict = {}
            for name in ("loratui.json", "loratui-merge.json"):
                if (path / name).is_file():
                    meta = json.loads((path / name).read_text())
            resolved = models.resolve_model(ModelSection(name=model))
            task = meta.get("task")
            if task is None:
                conf = AutoConfig.from_pretrained(resolved.path, **resolved.kwargs())
                archs = getattr(conf, "architectures", None) or []
                task = "seq-cls" if any("SequenceClassification" in a for a in archs) else "causal-lm"
            self.task = task
            self.model = models.auto_class(task).from_pretrained(resolved.path, dtype=dtype, **resolved.kwargs(),
                                                                 **_safe_weights(models, resolved, allow_pickle))
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())
            base_name = meta.get("base_model") or model
        if self.task == "seq-cls":
            id2label = getattr(self.model.config, "id2label", None) or {}
            self.labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))] or None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        after = memory_now(device)
        self.run_cfg = run_config(path)  # the run behind an adapter, a checkpoint or a merged model
        self.default_batch_file = self.run_cfg.data.validation_file if self.run_cfg is not None else None
        self.held_out = self._held_out()
        held = self.held_out and {"fraction": self.run_cfg.data.validation_fraction, "rows": len(self.held_out)}
        info = {"model": model, "base": base_name, "task": self.task, "labels": self.labels,
                "has_adapter": self.has_adapter, "device": device, "device_note": note,
                "dtype": str(dtype).replace("torch.", ""), "memory_before": before, "memory_after": after,
                "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
                "batch_file": self.default_batch_file, "held_out": held or None, "seconds": round(time.time() - t0, 2)}
        self.emit("loaded", **info)
        return info

    def _held_out(self):
        """The split the run held out of its data, made again as the engine made it; None without one (or no data)."""
        try:
            return held_out_rows(self.run_cfg) if self.run_cfg is not None else None
        except LoratuiError:
            return None

    def load_gguf(self, path: str | None, quiet: bool = False) -> dict | None:
        """Put a GGUF file beside the adapter (side 'gguf'), checked against its vocabulary; None drops it. A file
        that does not load leaves the one before in place."""
        if not path:
            if self.gguf is not None:
                self.gguf.close()
                self.gguf = None
            if not quiet:
                self.emit("gguf_loaded", file=None)
            return None
        from loratui.train.playground_gguf import FIELD, N_CTX, GgufSide

        self._need_model()
        if self.task == "seq-cls":
            raise LoratuiError("a classifier has no GGUF side: llama.cpp runs text generation models", field=FIELD,
                               hint="load a causal-LM adapter")
        self.emit("gguf_loading", file=str(path))
        n_model = self.model.get_input_embeddings().weight.shape[0]
        n_ctx = min(N_CTX, getattr(self.model.config, "max_position_embeddings", None) or N_CTX)
        side = GgufSide.open(path, self.tokenizer, n_model, n_ctx)
        if self.gguf is not None:
            self.gguf.close()
        self.gguf = side
        info = self.gguf.info()
        self.emit("gguf_loaded", **info)
        return info

    def _need_model(self) -> None:
        if self.model is None:
            raise LoratuiError("no model loaded", field="model", hint="pick an adapter or a model first")

    # -- prompts --------------------------------------------------------------------------------------------------
    def render(self, example: dict, chat_template: bool = True, system: str | None = None) -> str:
        system = system or (self.run_cfg.data.system_prompt if self.run_cfg is not None else None)
        return render_example(self.tokenizer, example, chat_template, system)

    # -- generation -----------------------------------------------------------------------------------------------
    def _side(self, side: str):
        import contextlib

        if side == "base" and self.has_adapter:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def generate_one(self, text: str, side: str, *, req_id: Any = None, max_new_tokens: int = 64,
                     temperature: float = 0.7, top_p: float = 0.9, greedy: bool = True, seed: int = 0,
                     stream: bool = True) -> dict:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        tok = self.tokenizer
        if side == "gguf":
            return self._generate_gguf(text, req_id=req_id, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, greedy=greedy, seed=seed, stream=stream)
        enc = tok(text, return_tensors="pt", add_special_tokens=not bool(getattr(tok, "chat_template", None)))
        enc = {k: v.to(self.device) for k, v in enc.items()}
        emit, stop = self.emit, self.stop

        class Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False
                self.ids: list[int] = []
                self.sent = ""

            def put(self, value) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                self.ids.extend(value.reshape(-1).tolist())
                text = tok.decode(self.ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    return  # half of a multi-byte character: wait for the rest
                delta, self.sent = text[len(self.sent):], text
                if delta and stream:
                    emit("token", id=req_id, side=side, text=delta)

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw) -> bool:
                return stop.is_set()

        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id,
                                  "stopping_criteria": StoppingCriteriaList([Stop()])}
        if greedy or temperature <= 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=None)
        streamer = Streamer()
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.no_grad(), self._side(side):
            out = self.model.generate(**enc, streamer=streamer, **kwargs)
        seconds = time.perf_counter() - t0
        new = out[0][enc["input_ids"].shape[1]:]
        answer = tok.decode(new, skip_special_tokens=True)
        n = int(new.shape[0])
        return {"id": req_id, "side": side, "text": answer.strip(), "tokens": n, "seconds": round(seconds, 3),
                "tokens_per_s": round(n / seconds, 1) if seconds > 0 else None, "stopped": stop.is_set()}

    def _generate_gguf(self, text: str, **kw: Any) -> dict:
        """The GGUF side's answer: the same rendered prompt and token ids as the adapter's, through llama.cpp."""
        if self.gguf is None:
            raise LoratuiError("no GGUF file loaded", field="gguf", hint="pick one with ctrl+l")
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=not bool(getattr(tok, "chat_template", None)))["input_ids"]
        eos = self.model.generation_config.eos_token_id
        stops = {*(eos if isinstance(eos, list) else [eos] if eos is not None else []), self.gguf.llm.token_eos()}
        return self.gguf.generate(tok, ids, stops | ({tok.eos_token_id} if tok.eos_token_id is not None else set()),
                                  emit=self.emit, stop=self.stop, **kw)

    def sides(self, wanted: list[str] | None = None) -> list[str]:
        """The sides asked for that exist: the adapter (or the model), the base under it, the GGUF beside it."""
        have = {"adapter"} | ({"base"} if self.has_adapter else set()) | ({"gguf"} if self.gguf else set())
        sides = wanted or ["adapter", "gguf" if self.gguf else "base"]
        return [s for s in sides if s in have] or ["adapter"]

    def generate(self, req: dict) -> None:
        self._need_model()
        if self.task == "seq-cls":
            return self.classify({"id": req.get("id"), "text": req.get("prompt", "")})
        text = self.render({"prompt": req.get("prompt", "")}, req.get("chat_template", True), req.get("system"))
        for side in self.sides(req.get("sides")):
            result = self.generate_one(
                text, side, req_id=req.get("id"), max_new_tokens=int(req.get("max_new_tokens", 64)),
                temperature=float(req.get("temperature", 0.7)), top_p=float(req.get("top_p", 0.9)),
                greedy=bool(req.get("greedy", True)), seed=int(req.get("seed", 0)))
            self.emit("done", **result)
            if self.stop.is_set():
                break

    def classify_one(self, text: str, side: str) -> list[tuple[str, float]]:
        import torch

        enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad(), self._side(side):
            logits = self.model(**enc).logits[0].float()
        probs = torch.softmax(logits, -1).tolist()
        names = self.labels or [str(i) for i in range(len(probs))]
        return sorted(zip(names, probs), key=lambda t: -t[1])

    def classify_many(self, texts: list[str], side: str, batch_size: int = 16) -> list[str]:
        """The top label of each text (padded batches; stops early when asked)."""
        import torch

        names = self.labels
        out: list[str] = []
        for start in range(0, len(texts), batch_size):
            if self.stop.is_set():
                break
            enc = self.tokenizer(texts[start:start + batch_size], return_tensors="pt", truncation=True,
                                 max_length=512, padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.no_grad(), self._side(side):
                top = self.model(**enc).logits.float().argmax(-1).tolist()
            out += [names[i] if names and i < len(names) else str(i) for i in top]
        return out

    def classify(self, req: dict) -> None:
        self._need_model()
        for side in self.sides(req.get("sides")):
            probs = self.classify_one(req.get("text", ""), side)
            self.emit("classified", id=req.get("id"), side=side, probs=[[n, round(p, 6)] for n, p in probs])

    def batch(self, req: dict) -> None:
        """Held-out examples through both models; a metric for each; the examples where they differ first
        (loratui.train.playground_batch)."""
        from loratui.train.playground_batch import run_batch

        run_batch(self, req)
