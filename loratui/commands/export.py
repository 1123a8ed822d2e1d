"""``loratui export``: an adapter or a model folder to GGUF files for llama.cpp and Ollama, checked by llama.cpp."""

from __future__ import annotations

import json
import signal

from loratui.commands.common import named_source, progress_printer, quiet_libraries, run_reported
from loratui.core.export import DEFAULT_TYPE, TYPES_HELP


def register(sub) -> None:
    x = sub.add_parser("export", help="export an adapter or model to GGUF (llama.cpp, Ollama), verified by llama.cpp")
    x.add_argument("source", metavar="ADAPTER_OR_MODEL",
                   help="adapter folder (merged in memory), run folder or name, or merged model folder")
    x.add_argument("output", metavar="OUT", help="folder for model-TYPE.gguf, Modelfile, README.md, export.json")
    x.add_argument("--gguf", default=DEFAULT_TYPE, metavar="TYPE[,TYPE...]",
                   help=f"{TYPES_HELP} (default: %(default)s)")
    x.add_argument("--base", help="base model (default: the one named in the adapter)")
    x.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="dtype of the merge the converter reads (default: %(default)s, exact; bf16 halves the memory)")
    x.add_argument("--prompts", type=int, default=5, metavar="N",
                   help="held-out prompts the check asks both models (default: %(default)s)")
    x.add_argument("--prompts-file", help="jsonl/csv of prompts (default: the run's validation file)")
    x.add_argument("--max-new-tokens", type=int, default=48, help="greedy answer length (default: %(default)s)")
    x.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    x.add_argument("--runs-dir", default=None, help="runs folder for a run name (default: ./runs or $LORATUI_RUNS_DIR)")
    x.add_argument("--jsonl", action="store_true", help="print progress as JSON lines (for the app)")
    x.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run "
                   "code hidden in the file, so only for files you trust")
    x.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    quiet_libraries()
    from loratui.core.export import format_report
    from loratui.train.export import export_gguf

    def stop(signum, frame):  # SIGTERM (the app's cancel) cleans up like ctrl-c
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    report, code = run_reported(args.jsonl, lambda: export_gguf(
        named_source(args.source, args.runs_dir), args.output, args.gguf, base=args.base, dtype=args.dtype, prompts=args.prompts_file,
        n_prompts=args.prompts, max_new_tokens=args.max_new_tokens, force=args.force, allow_pickle=args.allow_pickle,
        progress=progress_printer(args.jsonl)))
    if code is not None:
        return code
    if args.jsonl:
        print(json.dumps({"kind": "done", "output": report["output"], "files": [
            {k: f[k] for k in ("file", "type", "size_bytes")} | {"verdict": f["verify"]["verdict"]}
            for f in report["files"]], "template": report["template"]["note"], "seconds": report["seconds"]}),
            flush=True)
        return 0
    print(f"exported to {report['output']} in {report['seconds']:.0f} s; checked on {report['reference']['prompts']} "
          f"prompts ({report.get('prompts_from') or report.get('prompts_file') or 'generic prompts'}), greedy, {report['dtype']} merge as reference")
    print(format_report(report))
    print(report["template"]["note"])
    print(f"run it: llama-cli -m {report['output']}/{report['files'][0]['file']}   or   "
          f"ollama create {report['name']} -f {report['output']}/Modelfile")
    return 0
