"""The Textual app: screens, widgets, messages, and the services they use.

Imports from ``loratui.core`` only; the training side is reached through processes (the engine, the helper in
``offload``), never imported, so the first frame does not wait for torch.
"""
