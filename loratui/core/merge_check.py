"""How a merge is checked, in words a user can judge; shared by ``loratui merge`` and the app's merge wizard.

The merge reloads the merged model and runs the same probe through it and through base + adapter. Merging folds
``B @ A`` into weights stored in the chosen dtype, so the outputs differ by that dtype's rounding and no more:
the relative difference of the probe's logits stays under ``TOLERANCE[dtype]``, and the most likely token at each
probe position (the predicted label, for a classifier) is the same. Light module: no torch.
"""

from __future__ import annotations

from typing import Any

MERGE_DTYPES = ("fp16", "bf16", "fp32")
#: what ``loratui merge`` and the wizard use unless told otherwise (half the size of fp32, no fp16 overflow)
DEFAULT_MERGE_DTYPE = "bf16"
#: largest relative difference (L2 norm of the logits' difference over the L2 norm of the logits) that the
#: dtype's rounding explains; fp32 is exact up to summation order
#: (both models run in fp32 on the stored weights: on the embedded SmolLM2-135M demo's adapters a correct bf16
#: merge differs 0.64%, fp16 0.15%; a merge at half the adapter's scale 2.65% (bf16), one without it 4.7%)
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 1.5e-2}
#: share of probe positions whose most likely token must agree (near-ties may flip under rounding)
MIN_AGREEMENT = 0.9
DTYPE_HELP = {
    "fp16": "half the size of fp32, older GPUs",
    "bf16": "half the size, Ampere or newer GPUs and CPUs",
    "fp32": "largest, exact",
}


def judge(relative_diff: float, agree: int, total: int, dtype: str, task: str = "causal-lm") -> dict[str, Any]:
    """The check's verdict and the one line that explains it."""
    tol = TOLERANCE.get(dtype, TOLERANCE["fp32"])
    ok = relative_diff <= tol and (total == 0 or agree / total >= MIN_AGREEMENT)
    if task == "seq-cls":
        what, same = "predicted label", "the same" if agree == total else "different"
    else:
        what = "top token"
        same = (f"the same at all {total} probe positions" if agree == total
                else f"the same at {agree} of {total} probe positions")
    summary = (f"{'✔' if ok else '✖'} merged model matches the adapter: relative difference "
               f"{percent(relative_diff)} ({dtype} rounding allows up to {percent(tol)}); {what} {same}")
    if not ok:
        summary = summary.replace("matches the adapter", "differs from the adapter more than expected")
    return {"ok": ok, "relative_diff": relative_diff, "tolerance": tol, "agree": agree, "total": total,
            "summary": summary}


def headline(check: dict | None) -> str:
    """The result's first words: a merge whose check failed is saved but flagged, never '✔ merged'."""
    if check and check.get("ok") is False:
        return "⚠ merged, but the check failed"
    return "✔ merged"


def failed_advice(output: str, dtype: str) -> str:
    """What to do with a merged model whose check failed (it is kept)."""
    others = " or ".join(d for d in ("fp32", "fp16") if d != dtype)
    return (f"the merged model is kept in {output}, but it may not behave like the adapter: merge again in "
            f"{others} (fp32 is exact), or try it in the Playground against the adapter before using it")


def percent(x: float) -> str:
    """0.41% / 3% / <0.01%"""
    if x < 1e-4:
        return "<0.01%"
    return f"{x:.2%}".replace(".00%", "%")
