# Round 14 GPU call A (bench/NOTES.md "Round 13", items 1-4): the 8B bf16 LoRA line. ~450 s on one H100/H200.
# From the repo root: run(command="bash bench/calls/r14-a.sh", carry=[".whl", ".gpu"]); .whl from
# ../shared/gpu/fetch-wheels.sh, .gpu/tokenizer as bench/NOTES.md says. Results: $OUT/r.tgz (logs, json, gaps).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B=lora.r=16+lora.alpha=32+lora.preset=llama-all; O=host_trim=off
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B+$O,$B,$B+$O,$B,$B+copies=on,$B+copies=on+nonblock=on+pygc=off,$B+liger_kernels=ce 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
