"""Commands on models and adapters: ``merge``, ``estimate``, ``layers``, ``presets``, ``generate``."""

from __future__ import annotations

import json
import sys

from loratui.commands.common import named_source, progress_printer, quiet_libraries, run_reported
from loratui.core.errors import LoratuiError
from loratui.core.merge_check import DEFAULT_MERGE_DTYPE, DTYPE_HELP, MERGE_DTYPES


def register(sub) -> None:
    m = sub.add_parser("merge", help="merge an adapter into its base model")
    m.add_argument("adapter", help="adapter folder, or a run's name in the runs folder")
    m.add_argument("output")
    m.add_argument("--runs-dir", default=None, help="runs folder for a run name (default: ./runs or $LORATUI_RUNS_DIR)")
    m.add_argument("--base", help="base model (default: the one named in the adapter)")
    m.add_argument("--dtype", default=DEFAULT_MERGE_DTYPE, choices=MERGE_DTYPES,
                   help=f"weights dtype of the merged model (default: %(default)s; the app's wizard uses the same). "
                        + ", ".join(f"{k} ({v})" for k, v in DTYPE_HELP.items()))
    m.add_argument("--jsonl", action="store_true", help="print progress as JSON lines (for the app)")
    m.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run code hidden in the file, so only for files you trust")

    es = sub.add_parser("estimate", help="trainable parameters and memory estimate for a config")
    es.add_argument("config")

    ly = sub.add_parser("layers", help="list a model's linear layers (LoRA target candidates)")
    ly.add_argument("model", help="alias, folder or hub id")
    ly.add_argument("--task", choices=["causal-lm", "seq-cls"],
                    help="the model as it is fine-tuned (default: seq-cls for encoders such as BERT, else causal-lm)")
    ly.add_argument("--names", action="store_true", help="only the names, one a line")

    sub.add_parser("presets", help="list target-module presets and built-in models")

    g = sub.add_parser("generate", help="try a model or adapter on a prompt")
    g.add_argument("model", help="adapter folder, a run's name, merged model folder, alias or hub id")
    g.add_argument("--runs-dir", default=None, help="runs folder for a run name (default: ./runs or $LORATUI_RUNS_DIR)")
    g.add_argument("prompt", nargs="+", metavar="WORDS",
                   help="one prompt: its words are joined with spaces (for several prompts side by side with the "
                        "base model, the app's Playground: t, then ctrl+b for a batch)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run code hidden in the file, so only for files you trust")
    for name, func in (("merge", cmd_merge), ("estimate", cmd_estimate), ("layers", cmd_layers),
                       ("presets", cmd_presets), ("generate", cmd_generate)):
        sub.choices[name].set_defaults(func=func)


def cmd_merge(args) -> int:
    quiet_libraries()
    from loratui.train.merge import merge_adapter

    result, code = run_reported(args.jsonl, lambda: merge_adapter(
        named_source(args.adapter, args.runs_dir), args.output, base=args.base, dtype=args.dtype,
        progress=progress_printer(args.jsonl), allow_pickle=args.allow_pickle))
    if code is not None:
        return code
    # what the user waited: the process's whole life (starting Python and importing torch are most of a small
    # merge), not only the merge's own steps
    import time

    import psutil

    result["wall_seconds"] = round(time.time() - psutil.Process().create_time(), 1)
    from loratui.core.merge_check import failed_advice, headline

    ok = result["check"]["ok"]
    if args.jsonl:
        print(json.dumps({"kind": "done", **result}), flush=True)
    else:
        print(f"{headline(result['check'])}: {result['output']} ({result['size_bytes'] / 2**20:.1f} MiB, "
              f"{result['dtype']}, {result['wall_seconds']:.1f} s in all, {result['seconds']:.1f} s of it merging)")
        print(result["check"]["summary"])
        if not ok:
            print(failed_advice(result["output"], result["dtype"]), file=sys.stderr)
    return 0 if ok else 1  # a check that fails is a failed command, for scripts and the app too (the model stays)


def cmd_estimate(args) -> int:
    quiet_libraries()
    from loratui.core.config import load_config
    from loratui.train.estimate import count_params, estimate_memory

    cfg = load_config(args.config)
    print(count_params(cfg))
    report = estimate_memory(cfg)
    print(report.format_table())
    line = _per_card_line(cfg, report.rows[0])
    if line:
        print(line)
    from loratui.train.fit_run import preview

    fitted = preview(cfg)  # on a GPU box: what the engine's memory fit would choose on this card now
    if fitted:
        print(fitted)
    return 0


def _per_card_line(cfg, row) -> str | None:
    """On several cards, what each one holds (as Setup shows it): the strategy the engine would pick there."""
    from loratui.core.devices import plan_devices
    from loratui.core.gpu import query_gpus
    from loratui.train.distributed import World, strategy
    from loratui.train.estimate import gib

    try:
        visible = list(query_gpus())
        plan = plan_devices(cfg, visible)
    except (LoratuiError, ImportError):
        return None  # no NVML, or train.gpus can't be met here: the run itself says so at launch
    if plan.processes <= 1:
        return None
    cards = plan.gpus
    sizes = [g.memory_total for g in visible if g.index in cards and getattr(g, "memory_total", None)]
    how = strategy(cfg, World(size=len(cards)), min(sizes) if sizes else None, single_card_bytes=row.total)
    share = "a full replica" if how == "ddp" else "weights, grads and optimizer states sharded"
    return f"on {len(cards)} cards ({how.upper()}, {share}): {gib(row.per_card(how, len(cards)))} GiB a card"


def cmd_layers(args) -> int:
    quiet_libraries()
    from loratui.core.config import RunConfig
    from loratui.core.fmt import format_count
    from loratui.train.models import describe_linear_layers, guess_task

    cfg = RunConfig()
    cfg.model.name = args.model
    cfg.model.task = args.task or guess_task(cfg)
    rows = describe_linear_layers(cfg)
    if args.names:
        print("\n".join(r["name"] for r in rows))
        return 0
    print(f"{args.model} as {cfg.model.task} (heads left out; --task to change)")
    print(f"{'name':<16} {'layers':>6}  {'in -> out':<16} {'parameters':>12}")
    for r in rows:
        shapes = sorted(r["shapes"].items(), key=lambda kv: -kv[1])
        first = f"{shapes[0][0][0]} -> {shapes[0][0][1]}" + (f" x{shapes[0][1]}" if len(shapes) > 1 else "")
        print(f"{r['name']:<16} {r['count']:>6}  {first:<16} {r['params']:>12,}  ({format_count(r['params'])})")
        for (n_in, n_out), n in shapes[1:]:
            print(f"{'':<16} {'':>6}  {f'{n_in} -> {n_out} x{n}':<16}")
    return 0


def cmd_presets(args) -> int:
    from loratui.core.presets import PRESET_NOTES, PRESETS

    for name, mods in PRESETS.items():
        print(f"{name:<14} {', '.join(mods):<62} {PRESET_NOTES.get(name, '')}")
    from loratui.train.models import ALIASES

    print()
    for name, alias in ALIASES.items():
        print(f"{name:<22} {alias.description}")
    return 0


def cmd_generate(args) -> int:
    quiet_libraries()
    from loratui.train.generate import generate

    print(generate(named_source(args.model, args.runs_dir), " ".join(args.prompt),
                   max_new_tokens=args.max_new_tokens, allow_pickle=args.allow_pickle))
    return 0
