# Round 15 GPU call A2 (the last ~100 s of device time): do this round's two levers take on a real GPU (their log
# lines), and one 1B LoRA pair (round 14's path, then this round's default); the GQA probe first (seconds).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name --format=csv,noheader; timeout 25 python3 bench/gqa_probe.py 2>&1 | tail -8
python3 bench/speed.py --shape 1b --method lora --steps 40 --window-start 20 --batch 16 --no-seed --timeout 60 \
    --variants liger_sync=on+gqa=repeat,default 2>&1 | grep "^|"
grep -h "Error\|error:\|host syncs\|as they are" /tmp/o/1b-lora*.log | sort | uniq -c | tail -5
tar czf $OUT0/r.tgz -C /tmp/o .
