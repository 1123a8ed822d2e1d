"""The Playground's GGUF side: an exported file answered by llama.cpp beside the adapter, so the user sees what the
export (merge, conversion, quantization) cost.

The prompt is rendered and tokenized by the adapter's own tokenizer (its chat template, as the adapter side sees it)
and handed to llama.cpp as token ids, and the answer's ids are decoded by the same tokenizer: exactly what the
export's check does (``loratui.train.gguf_worker``, whose ``open_gguf`` and ``decode`` run it here too), so both
sides answer the same prompt token for token. Greedy is argmax on both sides; sampling draws with the same
temperature and top-p. Bad inputs are one line each (``LoratuiError`` naming the field and the fix).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any, Callable

from loratui.core.errors import LoratuiError
from loratui.core.export import list_exports
from loratui.train.gguf_worker import decode, open_gguf

FIELD = "gguf"
MAGIC = b"GGUF"
N_CTX = 2048
#: llama.cpp's threads wait for each other at every step: one core kept free for the app that draws the streamed
#: tokens (measured on a shared 2-core box, SmolLM2-135M q8_0: 1.5 tokens/s on 2 threads in the app, 66 on 1;
#: 8 to 18 on 2 threads and about 120 on 1 alone while other jobs ran)
THREADS = max(1, (os.cpu_count() or 2) - 1)
EXPORT_HINT = "export one first (Adapters: e, or loratui export --gguf q8_0)"


def check_file(path: str | Path) -> Path:
    """The GGUF file at ``path``, or one line saying why not (missing, a folder, not a GGUF file)."""
    text = str(path or "").strip()
    if not text:
        raise LoratuiError("no file given", field=FIELD, hint="give a .gguf file, e.g. runs/NAME/gguf/model-q8_0.gguf")
    p = Path(text).expanduser()
    if p.is_dir():
        found = [e.path.name for e in list_exports(p)]
        hint = f"pick one of its files: {', '.join(found[:4])}" if found else EXPORT_HINT
        raise LoratuiError(f"{text} is a folder, not a GGUF file", field=FIELD, hint=hint)
    if not p.is_file():
        raise LoratuiError(f"no such file {text}", field=FIELD, hint=EXPORT_HINT)
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise LoratuiError(f"cannot read {p.name}: {err.strerror or err}", field=FIELD,
                           hint="check the file's permissions") from None
    if head != MAGIC:
        raise LoratuiError(f"{p.name} is not a GGUF file (it does not start with 'GGUF')", field=FIELD,
                           hint="pick a .gguf file written by loratui export or llama.cpp")
    return p


def vocab_problem(n_gguf: int, token_text: Callable[[int], str], tok, n_model: int) -> str | None:
    """Why the GGUF's vocabulary is not the adapter's (None when it is): another size, or other tokens at the same
    ids (a spread of ids and the special tokens compared as text)."""
    if n_gguf != n_model:
        return f"{n_gguf:,} tokens, the adapter's base {n_model:,}"
    n = min(n_gguf, len(tok))
    ids = sorted(set(range(0, n, max(1, n // 256))) | {i for i in tok.all_special_ids if i is not None and i < n})
    differ = [i for i in ids if token_text(i) != tok.convert_ids_to_tokens(i)]
    if len(differ) > len(ids) // 10:
        i = differ[0]
        return (f"{len(differ)} of {len(ids)} tokens compared differ, e.g. id {i}: {token_text(i)!r} vs "
                f"{tok.convert_ids_to_tokens(i)!r}")
    return None


def sampler(temperature: float, top_p: float, seed: int):
    """Temperature and top-p (nucleus) sampling over llama.cpp's logits, seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(logits) -> int:
        z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-5)
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        q = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=q)])

    return pick


class GgufSide:
    """One GGUF file in llama.cpp, checked against the adapter's tokenizer."""

    def __init__(self, path: Path, llm, seconds: float, kind: str = ""):
        self.path, self.llm, self.seconds, self.kind = path, llm, seconds, kind

    @classmethod
    def open(cls, path: str | Path, tok, n_model: int, n_ctx: int = N_CTX) -> "GgufSide":
        file = check_file(path)
        try:
            import llama_cpp
        except ImportError:
            raise LoratuiError("llama-cpp-python is not installed: nothing here can run a GGUF file", field=FIELD,
                               hint="pip install 'loratui[export]' (or run .ci/setup)") from None
        t0 = time.time()
        try:
            llm = open_gguf(str(file), n_ctx, threads=THREADS)
        except (ValueError, RuntimeError) as err:  # llama.cpp could not load it: a truncated or unknown file
            raise LoratuiError(f"llama.cpp cannot load {file.name} ({str(err).strip()[:120]})", field=FIELD,
                               hint="export it again, or a newer llama-cpp-python may know this model") from None
        vocab = llama_cpp.llama_model_get_vocab(llm.model)

        def text(i: int) -> str:
            return llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace")

        problem = vocab_problem(llm.n_vocab(), text, tok, n_model)
        if problem:
            llm.close()
            raise LoratuiError(f"{file.name} has another vocabulary than the adapter's base ({problem})", field=FIELD,
                               hint="pick a GGUF exported from this adapter (or from its base model)")
        desc = ctypes.create_string_buffer(128)  # 'llama 135M Q8_0': the architecture, its size, the file's type
        llama_cpp.llama_model_desc(llm.model, desc, len(desc))
        kind = desc.value.decode("utf-8", "replace").split(" ", 2)[-1]
        return cls(file, llm, time.time() - t0, kind)

    def info(self) -> dict:
        return {"file": str(self.path), "name": self.path.name, "type": self.kind, "size": self.path.stat().st_size,
                "n_vocab": self.llm.n_vocab(), "n_ctx": self.llm.n_ctx(), "threads": THREADS,
                "seconds": round(self.seconds, 2)}

    def close(self) -> None:
        self.llm.close()

    def generate(self, tok, ids: list[int], stops: set[int], *, emit, stop, req_id: Any = None,
                 max_new_tokens: int = 64, temperature: float = 0.7, top_p: float = 0.9, greedy: bool = True,
                 seed: int = 0, stream: bool = True) -> dict:
        """The answer to a prompt's token ids, streamed as ``token`` events (side 'gguf') when ``stream``."""
        if len(ids) + max_new_tokens > self.llm.n_ctx():
            raise LoratuiError(f"the prompt ({len(ids)} tokens) and {max_new_tokens} new tokens do not fit the GGUF "
                               f"side's context of {self.llm.n_ctx()} tokens", field="max tokens",
                               hint="ask for fewer new tokens, or a shorter prompt")
        new: list[int] = []
        sent = ""

        def each(token: int) -> None:
            nonlocal sent
            new.append(token)
            text = tok.decode(new, skip_special_tokens=True)
            if text.endswith("\ufffd") or not stream:
                return  # half of a multi-byte character: wait for the rest
            delta, sent = text[len(sent):], text
            if delta:
                emit("token", id=req_id, side="gguf", text=delta)

        pick = None if greedy or temperature <= 0 else sampler(temperature, top_p, seed)
        t0 = time.perf_counter()
        answer, _ = decode(self.llm, ids, max_new_tokens, stops, pick=pick, each=each, stop=stop.is_set)
        seconds = time.perf_counter() - t0
        n = len(answer)
        return {"id": req_id, "side": "gguf", "text": tok.decode(answer, skip_special_tokens=True).strip(),
                "tokens": n, "seconds": round(seconds, 3), "stopped": stop.is_set(),
                "tokens_per_s": round(n / seconds, 1) if seconds > 0 else None}
