# Round 15 GPU call D: the fit chooses wide loss chunks again (fit_room.engine_runs with the model's type): the 1B
# LoRA step (two pairs) and the 8B bf16 step (one pair), wide=off (what rounds 13-15 ran) against the default.
# Carry [".whl", ".gpu"]. Results: $OUT/r.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null; export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/speed.py --shape 1b --method lora --steps 60 --window-start 30 --batch 16 --no-seed \
    --variants wide=off,default,wide=off,default 2>&1 | grep "^|"
grep -h "^memory" /tmp/o/1b-lora*.log | cut -c1-200 | sort | uniq -c
tar czf $OUT0/r.tgz -C /tmp/o .
B=lora.r=16+lora.alpha=32+lora.preset=llama-all
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B+wide=off,$B 2>&1 | grep "^|"
grep -h "^memory" /tmp/o/8b-lora*.log | cut -c1-200 | sort | uniq -c
tar czf $OUT0/r.tgz -C /tmp/o .
