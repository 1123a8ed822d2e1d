"""loratui: fine-tune language models with LoRA and QLoRA from the terminal."""

__version__ = "0.1.0"
