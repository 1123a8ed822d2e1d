"""The training side: models, data, estimates, the engine, merge and generation (torch, transformers, peft).

Imports from ``loratui.core`` only, never from ``loratui.ui``; nothing in the UI imports it (the app reaches it
through the engine process and the helper process in ``loratui.ui.offload``).
"""

import os as _os

# PyTorch's allocator grows segments in place instead of caching fixed-size blocks: packed batches of a new length
# each step otherwise leave the card holding GiBs the run no longer uses (1B LoRA: NVML 14.7 GiB for a 10.0 GiB
# torch peak, bench/RESULTS.md round 6). Set before anything here touches CUDA; the user's own setting wins.
_os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
