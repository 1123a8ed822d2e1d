"""The input embedding table in pinned host memory (``train.embedding_offload``): a frozen table the GPU never needs
whole.

Why: a LoRA or QLoRA run never trains the input embeddings, and a step reads only the rows of its own tokens, yet
the table sits on the card: 1.0 GiB of the Llama-3-8B shape's 5.4 GiB 4-bit base (128,256 x 4,096 in bf16). Here
the table lives in pinned host memory; each forward gathers its tokens' rows on the host (``index_select``, a few
MB a step) and copies them to the card in one transfer. The values are the same bytes as the card's lookup. A head
tied to the table (SmolLM2, Llama-3.2-1B) needs it on the card every step: those keep it there.
"""

from __future__ import annotations

import torch

WHY_NOT = {
    "tied": "the output head shares the input embeddings (tie_word_embeddings): the card needs them every step",
    "type": "the input embeddings are not a plain lookup table (a scaled or custom embedding module)",
    "trained": "the input embeddings are trained (lora.modules_to_save or a trainable embedding)",
    "missing": "the model has no input embeddings to move",
}


def why_not(model) -> str | None:
    """Why this model's input embeddings must stay on the card (a WHY_NOT key), None when they can move."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None:
        return "missing"
    if isinstance(emb, HostEmbedding):
        return None
    if hasattr(emb, "original_module") or hasattr(emb, "modules_to_save"):  # peft's copy that trains
        return "trained"
    if type(emb) is not torch.nn.Embedding or emb.max_norm is not None:  # max_norm rewrites rows as it reads them
        return "type"
    if emb.weight.requires_grad:
        return "trained"
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is emb.weight:
        return "tied"
    return None


class HostEmbedding(torch.nn.Module):
    """``nn.Embedding``'s forward over a table in pinned host memory. The table is neither a parameter nor a buffer
    (``model.to``, state dicts and the optimizer never see it); the looked-up rows land on ``device``."""

    def __init__(self, embedding: torch.nn.Embedding, device: torch.device):
        super().__init__()
        weight = embedding.weight.detach()
        cuda = torch.device(device).type == "cuda"
        self.table = weight.to("cpu").contiguous()
        if cuda:
            self.table = self.table.pin_memory()
        self.device, self.cuda = torch.device(device), cuda
        self.num_embeddings, self.embedding_dim = self.table.shape
        self.padding_idx = embedding.padding_idx
        self._staging: torch.Tensor | None = None  # pinned rows of the last step, reused
        self._copied = None  # CUDA event: the last copy out of the staging buffer has finished

    @property
    def weight(self) -> torch.Tensor:
        """The table (on the host): for readers such as ``resize_token_embeddings`` or a vocabulary check."""
        return self.table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.reshape(-1).to("cpu")
        n = ids.numel()
        if self._copied is not None:
            self._copied.synchronize()  # the staging buffer's last rows are on the card before they are replaced
        if self._staging is None or self._staging.shape[0] < n:
            self._staging = torch.empty((max(n, 1), self.embedding_dim), dtype=self.table.dtype,
                                        pin_memory=self.cuda)
        rows = self._staging[:n]
        torch.index_select(self.table, 0, ids, out=rows)
        out = rows.to(input_ids.device if input_ids.device.type != "cpu" else self.device,
                      non_blocking=self.cuda)
        if self.cuda:
            self._copied = torch.cuda.Event()
            self._copied.record()
        elif out.data_ptr() == rows.data_ptr():
            out = out.clone()  # on a CPU ``to`` returns the staging buffer itself: the next step would overwrite it
        return out.view(*input_ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, in host memory"


def move_to_host(model, device) -> int:
    """Replace ``model``'s input embeddings by a HostEmbedding; returns the bytes the card no longer holds. Forward
    hooks on the old module (peft's and transformers' input-gradient hooks) move with it."""
    reason = why_not(model)
    if reason is not None:
        raise ValueError(WHY_NOT[reason])
    emb = model.get_input_embeddings()
    if isinstance(emb, HostEmbedding):
        return 0
    host = HostEmbedding(emb, device)
    host._forward_hooks.update(emb._forward_hooks)
    host._forward_pre_hooks.update(emb._forward_pre_hooks)
    freed = emb.weight.numel() * emb.weight.element_size() if emb.weight.device.type != "cpu" else 0
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.set_input_embeddings(host)
    del emb
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # the table's blocks back to the card: NVML sees the run without them
    return freed
