"""What each memory saver of the fit costs and how the estimate is scaled for CUDA graphs: the calibration of
loratui.train.fit, measured on an H200 (bench/RESULTS.md; each figure's round and call are beside it)."""

from __future__ import annotations

GiB = 1024**3
#: extra step time of each saver, as a fraction of the step without it (bench/RESULTS.md, 8B QLoRA shape, H200)
CKPT_ALL_COST = 0.30  # every layer recomputed: 0.97x -> 0.75x Unsloth's tokens/s in two calls (round 5)
OFFLOAD_COST = 1.70  # every saved activation through the offloader: 2,038 -> 755 tokens/s (round 5, one call)
CKPT_OFFLOAD_COST = 0.09  # on top of checkpointing, only the layer inputs travel: 1,684 -> 1,551 (one call)
HALF_BATCH_COST = 1.0  # half the tokens a micro-step for the same fixed cost (a 4-bit base dequantizes its weights
# every micro-step): micro-batch 4 -> 1 took 4.3x the time (1,551 -> 361 tokens/s, one call)
#: CUDA graphs of the decoder layers (train.cuda_graphs) keep each step size's inputs, outputs and activations in their
#: own memory: times the estimate without them (auto turns them on only when that much fits the budget). NVML over
#: that estimate: 1B LoRA 17.65 over 10.90 (1.62x, round 12), 8B bf16 LoRA all linear 95.61 over 61.78 (1.55x, round
#: 10); a 4-bit base keeps each layer's dequantized weights too: 8B QLoRA 47.72 over 24.06 (1.98x, round 13, and the
#: same 47.72 in round 7). 2.0 for both read the 16-bit runs 24-29% high.
GRAPHS_MEMORY = 1.65
GRAPHS_MEMORY_QUANTIZED = 2.0
#: checkpointed layers replayed as graphs (loratui.train.graphs_ckpt) keep one layer's working memory in the graphs'
#: pool (up to the largest step size) beside the checkpoints, and the graphs themselves take some 0.25 GiB outside
#: torch: NVML over the estimate, 8B QLoRA batch 4 with the input embeddings in host memory, offloaded checkpoints
#: and 8-bit AdamW: 7.33 over 6.50 (1.13x), micro-batch 2: 6.73 over 6.24 (1.08x), round 9, one call; round 8
#: (warm-ups outside the pool, +0.3-0.8 GiB while a new size was captured): 1.15-1.18x, long rows 1.11x
GRAPHS_CKPT_MEMORY = 1.13
#: the checkpoints in host memory under graphs: 4,180 tokens/s without (round 9, call 1), 4,118 with (call 2), 8B QLoRA
GRAPHS_CKPT_OFFLOAD_COST = 0.02
#: ...and are faster than no checkpointing without graphs where the host issuing kernels is what a step waits on
#: (8B QLoRA batch 4: 5,369 vs 2,229 tokens/s; 1B LoRA batch 16: 42,660 vs 32,198; round 7-8), not where the card
#: is busy. Graphs, checkpointed or not, are chosen only up to this much work a step (parameters x tokens of the
#: largest step: those two 3e13 and 1.5e13): 8B bf16 LoRA all linear, 16 rows (1.3e14), ran 9,748 tokens/s with
#: graphs against 11,490 without, at 95.6 against 62.6 GiB (round 10, one call: packed steps padded to the graphs'
#: sizes compute the padding), and checkpointed graphs won over the eager savers where memory is short up to the
#: same (8B QLoRA, 4 rows of 4,096 tokens, 1.3e14: 8,040 tokens/s checkpointed in graphs at 16.6 GiB under a
#: 24 GiB budget, round 8; eager, 29 of 32 layers checkpointed: 8,997 at 19.0 GiB, round 5)
GRAPHS_WORK = 5e13
GRAPHS_CKPT_TEXT = "CUDA graphs on (each checkpointed layer recomputed in its graph)"
GRAPHS_CKPT_COST = -0.25  # step time against running as written without graphs (1B LoRA: 32,198 -> 42,660)
#: ...and on a 4-bit or 8-bit base, whose eager step is the most host-bound: 8B QLoRA batch 4, eager checkpointing
#: 1,496 tokens/s against 5,010 checkpointed in graphs (round 8, one call): with CKPT_ALL_COST, about -0.6
GRAPHS_CKPT_COST_QUANTIZED = -0.5
#: halving the micro-batch under graphs costs less than eagerly (the host's share of a step is replayed):
#: 8B QLoRA checkpointed in graphs, micro-batch 4 -> 2, 4,118 -> 3,034 tokens/s (round 9, one call)
GRAPHS_HALF_BATCH_COST = 0.36
#: the input embeddings in host memory (train.embedding_offload): a host lookup and one copy of the step's rows
EMBEDDING_COST = 0.02
#: 8-bit AdamW for fused AdamW (train.optimizer: auto), bitsandbytes' (Unsloth's recipe uses it): 8B QLoRA in
#: checkpointed graphs 5,369 -> 4,261 tokens/s (round 8, one call); 6 bytes less a trainable parameter
EIGHT_BIT = "adamw_8bit"
EIGHT_BIT_COST = 0.26
#: of the free memory "auto" plans for (the estimate is within about 10%; other processes may grow)
AUTO_SHARE = 0.92

#: levers a quantized run leaves on auto that cost speed for memory: what they are and what they cost (one H200,
#: 8B QLoRA shape, batch 4, bench/RESULTS.md round 5)
FASTER = {
    "liger": ("Liger's kernels", "2,303 -> 2,975 tokens/s off (+29%), +7.8 GiB"),
    "lean_mlp": ("the lean MLP", "2,058 -> 2,432 tokens/s off (+18%), +2.1 GiB"),
}
