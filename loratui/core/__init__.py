"""The light core: config, the run protocol, run folders, adapters on disk, GPUs through NVML.

Imports neither torch, transformers, peft, datasets nor Textual, so the CLI and the app can use it at once.
It imports nothing from ``loratui.train`` or ``loratui.ui``.
"""
