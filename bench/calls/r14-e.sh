# Round 14 GPU call E: one pair of the adapters' copies A/B (the device time left after four refused starts).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B=lora.r=16+lora.alpha=32+lora.preset=llama-all
python3 bench/speed.py --shape 8b --method lora --steps 45 --window-start 20 --batch 16 --no-seed --timeout 100 \
    --variants $B,$B+copies=on 2>&1 | grep "^|"
grep -h "Error\|error:" /tmp/o/8b-lora*.log | tail -3
mkdir -p /tmp/o/ab && mv /tmp/o/*.json /tmp/o/ab/ 2>/dev/null; tar czf $OUT0/r.tgz -C /tmp/o .
