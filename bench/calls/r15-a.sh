# Round 15 GPU call A (bench/NOTES.md "Round 15"): Liger's loss without its host syncs (loratui.train.liger_sync,
# the default now) against Liger as it ships (liger_sync=on), two ABAB pairs on the 8B bf16 LoRA step; then the
# host's copies and collector on top of the new default; then the GQA probe. Carry [".whl", ".gpu"] (as r14-a.sh).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B=lora.r=16+lora.alpha=32+lora.preset=llama-all
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B+liger_sync=on,$B,$B+liger_sync=on,$B 2>&1 | grep "^|"
grep -h "Error\|error:\|host syncs" /tmp/o/8b-lora*.log | sort | uniq -c | tail -4
mkdir -p /tmp/o/ab && mv /tmp/o/*.json /tmp/o/ab/ 2>/dev/null; tar czf $OUT0/r.tgz -C /tmp/o .
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B+nonblock=on+pygc=off 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
timeout 40 python3 bench/gqa_probe.py 2>&1 | tail -12
