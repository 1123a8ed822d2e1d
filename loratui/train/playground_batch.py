"""The Playground's batch: held-out examples through both models (the adapter and its base, or a GGUF export beside
it), a metric for each side, one event an example and one at the end."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from loratui.core.errors import LoratuiError
from loratui.train.examples import exact, held_out_examples, macro_f1, read_examples, valid_json

if TYPE_CHECKING:
    from loratui.train.playground_model import Playground


def run_batch(pg: Playground, req: dict) -> None:
    """Held-out examples through both models; a metric for each; the examples where they differ first."""
    pg._need_model()
    if req.get("held_out"):  # the run's validation_fraction split: rows it never trained on
        path = f"the run's held-out {pg.run_cfg.data.validation_fraction:.0%}" if pg.held_out else ""
        examples = held_out_examples(pg.run_cfg, int(req.get("n", 20)), pg.held_out) if path else []
        if not examples:
            raise LoratuiError("no held-out rows this playground can read", field="batch", hint="give a file")
    else:
        path = req.get("file") or pg.default_batch_file
        if not path:
            raise LoratuiError("no held-out file", field="batch file", hint="give a .jsonl or .csv file")
        run_file = path == pg.default_batch_file  # the run's validation file: under the run's column names
        examples = read_examples(path, int(req.get("n", 20)), pg.run_cfg if run_file else None)
    sides = pg.sides(req.get("sides"))
    answers: dict[str, list[str]] = {s: [] for s in sides}
    t0 = time.time()
    predicted: dict[str, list[str]] = {}
    if pg.task == "seq-cls":  # classifiers take the examples in padded batches: one forward pass per 16
        texts = [ex.get("text") or ex.get("prompt", "") for ex in examples]
        predicted = {side: pg.classify_many(texts, side) for side in sides}
    for i, ex in enumerate(examples):
        if predicted and i >= min(len(v) for v in predicted.values()):
            break  # stopped part way
        item: dict[str, Any] = {"id": req.get("id"), "index": i, "prompt": ex["shown"], "reference": ex["reference"]}
        for side in sides:
            if pg.task == "seq-cls":
                label = predicted[side][i]
                answer, ok = label, label == ex["reference"]
            else:
                text = pg.render(ex, req.get("chat_template", True), req.get("system"))
                answer = pg.generate_one(text, side, req_id=req.get("id"), stream=False,
                                           max_new_tokens=int(req.get("max_new_tokens", 64)),
                                           greedy=bool(req.get("greedy", True)),
                                           temperature=float(req.get("temperature", 0.7)),
                                           top_p=float(req.get("top_p", 0.9)), seed=int(req.get("seed", 0)))["text"]
                ok = exact(answer, ex["reference"])
            answers[side].append(answer)
            item[side] = answer
            item[f"{side}_ok"] = ok
            if pg.task != "seq-cls":
                item[f"{side}_json"] = valid_json(answer)
            if side == "gguf" and "adapter" in item:
                item["gguf_same"] = exact(answer, item["adapter"])
        pg.emit("batch_item", **item)
        if pg.stop.is_set():
            break
    refs = [ex["reference"] for ex in examples][: len(answers[sides[0]])]
    scores: dict[str, dict[str, Any]] = {}
    for side in sides:
        got = answers[side]
        if pg.task == "seq-cls":
            acc = sum(a == r for a, r in zip(got, refs))
            scores[side] = {"accuracy": acc / len(refs) if refs else 0.0, "correct": acc,
                            "f1": macro_f1(got, refs)}
        else:
            scores[side] = {"exact": sum(exact(a, r) for a, r in zip(got, refs)),
                            "valid_json": sum(valid_json(a) for a in got)}
            if side == "gguf" and "adapter" in answers:  # what the export (and its quantization) changed
                scores[side]["same_as_adapter"] = sum(exact(a, b) for a, b in zip(got, answers["adapter"]))
    pg.emit("batch_done", id=req.get("id"), n=len(refs), task=pg.task, scores=scores, file=path,
              seconds=round(time.time() - t0, 2), stopped=pg.stop.is_set())
