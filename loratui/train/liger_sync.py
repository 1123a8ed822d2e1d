"""Liger's fused linear cross-entropy without its two host syncs a micro-batch (issue 16).

Liger 0.8.5 reads the count of targets that are not ignored with ``.item()`` in the forward, and checks
``torch.equal(grad_output, 1.0)`` in the backward: each waits for the card to finish everything queued. In the 8B
step the host is ahead of the card through the forward's large matmuls and behind it in the backward's runs of
small kernels (bench/NOTES.md rounds 13-14): the sync at the loss throws that lead away just before it is needed.

Transformers passes ``num_items_in_batch`` to the loss, so Liger reduces with ``sum`` and the count goes unused
(the kernel divides by it only for ``mean``; token accuracy and class weights read it too: those keep the sync).
The backward multiplies by ``grad_output`` always (``x * 1.0 == x``: the same numbers where it was skipped).
Liger's open pull request #1292 removes both syncs in the library; when a release has it, this finds neither line
and changes nothing. The rewrite is of those two lines only, checked word for word: a Liger whose source differs
keeps its own functions.
"""

from __future__ import annotations

import inspect
import textwrap

#: set False to keep Liger's functions as they are (the bench's ``liger_sync=on``)
ENABLED = True

COUNT = "total_n_non_ignore = target_mask.sum().item()"
COUNT_LAZY = ("total_n_non_ignore = (1 if reduction == 'sum' and ce_weight is None and ce_impl is None "
              "and not return_token_accuracy else target_mask.sum().item())")
EQUAL = "if not torch.equal(grad_output, torch.tensor(1.0, device=grad_output.device)):"
EQUAL_ALWAYS = "if True:  # loratui: no sync; multiplying by 1.0 changes nothing"


def rewrite(fn, old: str, new: str):
    """``fn`` rebuilt from its source with the one line ``old`` replaced by ``new``, in its module's globals; None
    where the source has ``old`` other than exactly once (another version of the library)."""
    src = textwrap.dedent(inspect.getsource(fn))
    if src.count(old) != 1:
        return None
    namespace: dict = {}
    exec(compile(src.replace(old, new), inspect.getsourcefile(fn) or "<liger>", "exec"), fn.__globals__, namespace)
    return namespace[fn.__name__]


def drop_loss_syncs(module=None) -> int:
    """Rebind the fused loss's forward and backward in Liger's ops module (``module``: for tests) to versions without
    the syncs; returns how many of the two were replaced (0 where Liger's source is not the one this knows)."""
    if not ENABLED:
        return 0
    if module is None:
        import liger_kernel.ops.fused_linear_cross_entropy as module
    done = 0
    for name, old, new in (("fused_linear_cross_entropy_forward", COUNT, COUNT_LAZY),
                           ("fused_linear_cross_entropy_backward", EQUAL, EQUAL_ALWAYS)):
        fn = getattr(module, name, None)
        if fn is None or getattr(fn, "_loratui_no_sync", False):
            done += fn is not None
            continue
        try:
            new_fn = rewrite(fn, old, new)
        except (OSError, SyntaxError, TypeError):  # no source shipped, or a line that no longer parses
            new_fn = None
        if new_fn is not None:
            new_fn._loratui_no_sync = True
            setattr(module, name, new_fn)
            done += 1
    return done
