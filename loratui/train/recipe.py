"""The recipe's steps before training: the card and strategy, the memory fit, the data, the model with its
fast-path levers, the Trainer and its arguments. A mixin of :class:`loratui.train.engine.Engine` (its state is the
engine's), as :mod:`loratui.train.closing` is for the steps after."""

from __future__ import annotations

import os

from loratui.core.config import RunConfig
from loratui.train.callbacks import EventsCallback
from loratui.train.trainers import token_counting_trainer, trainer_class

OPTIMIZERS = {
    "adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused", "paged_adamw_8bit": "paged_adamw_8bit",
    "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "paged_adamw_32bit", "adafactor": "adafactor", "sgd": "sgd",
}


class Recipe:
    """The engine's set-up steps (see the module's docstring)."""

    def _place(self):
        """This process's card and strategy (DDP / FSDP under torchrun), and the checkpoint to resume from."""
        import torch

        from loratui.train import distributed

        self.cfg = self.run_dir.config()
        self._cuda = torch.cuda.is_available()
        w = self.world
        if self._cuda and w.distributed:
            torch.cuda.set_device(w.local_rank)  # each rank on its own card (QLoRA's device_map follows it)
        card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory if self._cuda else None
        self.strategy = distributed.strategy(self.cfg, w, card)
        checkpoint, skipped = self._pick_checkpoint()
        if checkpoint is not None:
            first = next((e for e in self.run_dir.events() if e.get("kind") == "started"), None)
            distributed.check_resume_world(first, w)
        return checkpoint, skipped

    def _fit_memory(self) -> None:
        """The config as it runs on this card: the memory fit's savers when the estimate exceeds the budget."""
        from loratui.train import fit_run

        self.cfg, self.fit = fit_run.for_run(self.cfg, distributed=self.world.distributed)
        if self.fit is not None and self.fit.worth_saying:
            self.echo(self.fit.message())

    def _preflight(self):
        from loratui.train import preflight

        return preflight.check(self.cfg, data=False)

    def _setup_data(self, pre):
        """Tokenizer, the train / validation splits tokenized with their loss masks, and their stats."""
        from loratui.train import data, models

        cfg = self.cfg
        self.tokenizer = tokenizer = data.prepare_tokenizer(models.load_tokenizer(cfg, pre.resolved))
        train_raw, val_raw = data.load_splits(cfg)
        self.labels = data.label_names(cfg, train_raw) if cfg.model.task == "seq-cls" else None
        if cfg.method.objective != "sft":  # rows checked and measured here, tokenized by TRL's trainer
            from loratui.train.data import preference

            train_ds, val_ds, stats = preference.prepare_splits(cfg, tokenizer, train_raw, val_raw)
            if preference.length_note(stats):
                self.echo(preference.length_note(stats))
        else:
            train_ds, val_ds, stats = data.tokenize_splits(cfg, tokenizer, train_raw, val_raw)
        n = cfg.data.eval_samples
        if val_ds is not None and n is not None and n < len(val_ds):
            self.full_eval, val_ds = val_ds, val_ds.select(range(n))  # the curve on a slice, the end on all
        self.n_eval = len(val_ds) if val_ds is not None else 0
        if val_ds is not None:
            from loratui.train.watch import EarlyStop, metric_for

            t = cfg.train
            self.early = EarlyStop(metric_for(cfg.model.task, t.early_stopping_metric), t.early_stopping_patience,
                                   t.early_stopping_min_delta)
        return train_ds, val_ds, stats

    def _final_eval(self, trainer) -> None:
        """The closing evaluation: on the whole held-out set when the curve used a slice of it (its ``eval``
        event says ``final`` and how many examples), else on the curve's set at a step it has not seen."""
        n = len(self.full_eval) if self.full_eval is not None else self.n_eval
        self.emit("phase", phase=f"final eval: {n} examples")  # the watchdog allows for its length
        if self.full_eval is not None:
            self.echo(f"evaluating on all {len(self.full_eval)} held-out examples...")
        self.eval_final = True
        try:
            trainer.evaluate(eval_dataset=self.full_eval)  # None: the trainer's own eval set
        finally:
            self.eval_final = False

    def _setup_model(self, pre, has_eval: bool):
        """The base model as the method and the fast path need it, then the method (LoRA, QLoRA, ...) on top.
        The KV cache and gradient checkpointing are configured here and nowhere else."""
        from loratui.train import distributed, models, speed

        cfg = self.cfg
        seed_everything(cfg.train.seed)  # before the model: a new head and the LoRA matrices start the same each run
        self.speed = sp = speed.resolve(cfg, self._cuda, models.load_model_config(cfg, pre.resolved).model_type)
        if sp.attention == speed.VARLEN:
            if speed.register_varlen_attention() and self._cuda:
                self.echo("varlen attention takes grouped key/value heads as they are")
        fsdp = self.strategy == "fsdp"
        if fsdp:  # FSDP's low-memory loading is switched on by TrainingArguments, before the load
            self._fsdp_args = distributed.fsdp_settings(models.build_meta_model(cfg), cfg.train.gradient_checkpointing)
            self._training_args(pre.precision, has_eval=has_eval)
        explicit = cfg.train.attention != "auto" or sp.attention == speed.VARLEN
        model = models.load_model(cfg, pre.resolved, pre.precision, self.labels,
                                  attn_implementation=sp.attention if explicit else None, fsdp=fsdp)
        model.config.use_cache = False  # no KV cache in training (packed examples must not attend across)
        checkpointing = cfg.train.gradient_checkpointing
        if checkpointing and not cfg.quantized:  # a quantized base gets it from its k-bit preparation
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = models.apply_method(cfg, model, gradient_checkpointing=checkpointing, fsdp=fsdp,
                                         lean=sp.lean)
        if sp.embedding_offload:
            self._embeddings_to_host()
        if fsdp and sp.liger and cfg.uses_lora:
            self._head_gathered = distributed.unshard_head_for_fused_ce(self.model)
        if speed.fused_cross_entropy(cfg, sp.liger) and self._fused_ce():
            from loratui.train.liger_sync import drop_loss_syncs

            if drop_loss_syncs():  # the host keeps its lead into the backward (no .item() at the loss)
                self.echo("Liger's fused loss runs without its host syncs")
            if sp.wide_loss_chunks:
                speed.widen_loss_chunks()
        if sp.fused_lora:  # before lean_lora, which leaves fused projections' dropout to the fused function
            from loratui.train.fused_lora import fuse_lora

            self.echo(f"fused LoRA: {fuse_lora(self.model)} adapted projections run as one function each")
        if cfg.uses_lora and pre.precision in ("bf16", "fp16"):  # under autocast, adapters take their input as is
            from loratui.train.lean import keep_adapter_input_dtype

            keep_adapter_input_dtype(self.model)
        if sp.lean:  # speed.resolve grants it to LoRA methods only
            from loratui.train.lean import lean_gated_mlps, lean_lora

            # whole-layer checkpointing already recomputes the dropout; graphs: no generator state
            lean_lora(self.model, recompute_dropout=not checkpointing and not sp.cuda_graphs)
            if sp.lean_mlp:
                lean_gated_mlps(self.model)
        if cfg.uses_lora:  # a 16-bit base's projections add their adapter's product in place (after lean's folding)
            from loratui.train.inplace_lora import inplace_lora

            inplace_lora(self.model)
            from loratui.train import adapter_copies

            if adapter_copies.ENABLED and self._cuda and not sp.cuda_graphs and not self.world.distributed and \
                    cfg.method.objective == "sft":
                adapter_copies.install_adapter_copies(self.model)
        if sp.compile == "regional":
            from loratui.train.speed import compile_layers

            self.echo(f"compiling {compile_layers(self.model)} decoder layers (each on its own, dynamic shapes)")
        if sp.cuda_graphs:
            import torch

            from loratui.train.graphs import LayerGraphs

            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(pre.precision)
            from loratui.train import data
            from loratui.train.graphs import bucket_for

            longest = bucket_for(cfg.train.batch_size * data.effective_max_length(cfg, self.tokenizer) + 1)
            self.graphs = LayerGraphs(self.model, autocast_dtype=dtype, notify=self._graphs_failed,
                                      checkpoint=checkpointing, offload=sp.offload, max_tokens=longest,
                                      log=self.echo)
            self.echo(f"CUDA graphs: {len(self.graphs.layers)} decoder layers replayed as graphs"
                      f"{' (checkpointed: each keeps its input only)' if checkpointing else ''} (packed steps "
                      "padded to a few sizes; the first step of each size captures them, a few seconds)")
        if checkpointing and self.fit is not None and self.fit.ckpt_layers is not None:
            from loratui.train.fit_run import limit_checkpointing

            limit_checkpointing(self.model, self.fit.ckpt_layers)
        return self.model

    def _embeddings_to_host(self) -> None:
        """train.embedding_offload: the input embedding table into pinned host memory (loratui.train.host_embedding),
        or a one-line error naming why this model keeps it on the card."""
        import torch

        from loratui.core.errors import ConfigError
        from loratui.train.host_embedding import WHY_NOT, move_to_host, why_not

        reason = why_not(self.model)
        if reason is not None:
            raise ConfigError(f"train.embedding_offload on does not apply to this model: {WHY_NOT[reason]}",
                              field="train.embedding_offload", hint="set train.embedding_offload: auto")
        freed = move_to_host(self.model, torch.device("cuda", torch.cuda.current_device()))
        self.echo(f"input embeddings in host memory: {freed / 2**30:.2f} GiB off the card (each step's rows are "
                  "looked up on the host and copied over)")

    def _graphs_failed(self, message: str) -> None:
        """CUDA graphs could not be captured (loratui.train.graphs): the run goes on eager, and says so."""
        step = self.trainer.state.global_step + 1 if getattr(self, "trainer", None) is not None else 0
        self.emit("alert", step=step, alert="graphs_off", message=message)
        self.echo(f"alert: {message}")

    def _build_trainer(self, model, precision: str, train_ds, val_ds):
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from loratui.train import data, speed

        cfg, sp = self.cfg, self.speed
        if "tensorboard" in cfg.train.report_to:  # the Trainer's TensorBoard callback writes where this says
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.run_dir.path / "tensorboard")
        if "wandb" in cfg.train.report_to:
            os.environ.setdefault("WANDB_DIR", str(self.run_dir.path))
            os.environ.setdefault("WANDB_NAME", self.run_dir.name)
            if not os.environ.get("WANDB_API_KEY"):
                os.environ.setdefault("WANDB_MODE", "offline")  # a GPU box without a network still records it
        objective = cfg.method.objective
        if objective != "sft":  # TRL's trainer for the objective, under the same engine classes
            from loratui.train import preference

            fields = preference.config_fields(cfg, data.effective_max_length(cfg, self.tokenizer))
            self.args = args = self._training_args(precision, has_eval=val_ds is not None,
                                                   config_class=preference.trl_classes(objective)[1], **fields)
            base, extra = preference.trainer_base(objective, token_counting_trainer()), {}
        else:
            self.args = args = self._training_args(precision, has_eval=val_ds is not None)
            base = token_counting_trainer()
            extra = dict(data_collator=data.make_collator(cfg, self.tokenizer, packing=sp.packing,
                                                          varlen=sp.attention == speed.VARLEN,
                                                          graphs=sp.cuda_graphs),
                         compute_metrics=classification_metrics(cfg) if cfg.model.task == "seq-cls" and
                         val_ds is not None else None)
        self.trainer = trainer = trainer_class(self, base)(
            model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=self.tokenizer,
            callbacks=[EventsCallback(self)], **extra)
        copies = getattr(self.model, "loratui_adapter_copies", None)
        if copies is not None:  # refreshed as training starts and after each optimizer step
            trainer.add_callback(copies)
        if objective != "sft":
            self.echo(f"{objective}, beta {cfg.method.beta:g}: the reference is "
                      f"{preference.settle_reference(trainer, cfg)}")
            self.full_eval = preference.eval_rows_for(trainer, cfg, self.full_eval)
        if sp.offload and not sp.cuda_graphs:  # the graphs offload their checkpoints themselves
            from trl.models.activation_offloading import get_act_offloading_ctx_manager

            trainer.offload = get_act_offloading_ctx_manager(trainer.model, warn_if_no_head=False)
        trainer.remove_callback(PrinterCallback)  # our own progress line replaces its raw dict prints
        trainer.remove_callback(ProgressCallback)
        return trainer

    def _training_args(self, precision: str, has_eval: bool, config_class=None, **fields):
        """transformers' TrainingArguments for this run, or ``config_class`` (a TRL config, a subclass of it) with
        its own ``fields`` added."""
        from transformers import TrainingArguments

        from loratui.train import speed

        t = self.cfg.train
        eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
        return (config_class or TrainingArguments)(
            output_dir=str(self.run_dir.checkpoints_dir),
            num_train_epochs=t.epochs,
            max_steps=t.max_steps or -1,
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
            gradient_accumulation_steps=t.grad_accum,
            learning_rate=t.lr,
            lr_scheduler_type=t.scheduler,
            warmup_steps=t.warmup_steps or t.warmup_ratio,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            logging_steps=t.logging_steps,
            logging_first_step=True,
            eval_strategy=eval_strategy,
            eval_steps=t.eval_steps,
            eval_on_start=t.eval_on_start and has_eval and not self.resume,
            save_strategy="steps" if t.save_steps else "epoch",
            save_steps=t.save_steps or 500,
            save_total_limit=t.save_total_limit,
            # the model enables it itself (a quantized base in its k-bit preparation; some layers only, when the
            # memory fit chose that: the Trainer would switch every layer back on)
            gradient_checkpointing=t.gradient_checkpointing and not self.cfg.quantized and (
                self.fit is None or self.fit.ckpt_layers is None) and not self.speed.cuda_graphs,  # graphs: their own
            gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not self._cuda,
            optim=OPTIMIZERS[self.speed.optimizer],
            use_liger_kernel=self.speed.liger,
            liger_kernel_config={"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                                 "fused_linear_cross_entropy": speed.fused_cross_entropy(self.cfg, self.speed.liger)
                                 and self._fused_ce()}
            if self.speed.liger else None,  # TRL's preference trainers fuse their own LM head (log-probs in chunks)
            torch_compile=self.speed.compile is True,
            ddp_find_unused_parameters=False,  # LoRA freezes most weights; searching for unused ones costs a pass
            fsdp=self._fsdp_args[0] if self._fsdp_args else False,
            fsdp_config=self._fsdp_args[1] if self._fsdp_args else None,
            seed=t.seed,
            data_seed=t.seed,
            dataloader_num_workers=t.dataloader_workers,
            report_to=list(t.report_to) or "none",
            disable_tqdm=True,
            include_num_input_tokens_seen="no",
            logging_nan_inf_filter=False,  # a non-finite loss is logged as it is: the watchdog must see it  # counted on the device by the trainer: no host sync a step
            save_only_model=False,
            **fields,
        )


def classification_metrics(cfg: RunConfig):
    import numpy as np

    from loratui.train.metrics import load_metric

    accuracy, f1 = load_metric("accuracy"), load_metric("f1")
    average = "binary" if cfg.model.num_labels == 2 else "macro"

    def compute(eval_pred):
        logits, labels = eval_pred
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.argmax(logits, axis=-1)
        out = accuracy.compute(predictions=preds, references=labels)
        out.update(f1.compute(predictions=preds, references=labels, average=average))
        return out

    return compute


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and every GPU) from one seed, as the plain PEFT recipe does with set_seed first.
    Called on every rank before the model is built."""
    from transformers import set_seed

    set_seed(seed)
