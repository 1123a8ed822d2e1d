"""The training side: models, data, estimates, the engine, merge and generation (torch, transformers, peft).

Imports from ``loratui.core`` only, never from ``loratui.ui``; nothing in the UI imports it (the app reaches it
through the engine process and the helper process in ``loratui.ui.offload``).
"""
