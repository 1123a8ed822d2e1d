# Round 15 GPU call C (after A measured both levers at 42.1-42.3% MFU): one more pair of the 8B bf16 step at 50 steps
# (round 14's path against this round's default), the 1B LoRA step with and without Liger's loss syncs, then the 8B
# QLoRA fit at a 16 GB budget. Carry [".whl", ".gpu"]. Results: $OUT/r.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B=lora.r=16+lora.alpha=32+lora.preset=llama-all; OLD=$B+liger_sync=on+gqa=repeat
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B,$OLD 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
python3 bench/speed.py --shape 1b --method lora --steps 60 --window-start 30 --batch 16 --no-seed \
    --variants liger_sync=on,default,liger_sync=on,default 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
python3 bench/speed.py --shape 8b --method qlora --steps 30 --window-start 15 --batch 4 --no-seed --timeout 130 \
    --variants budget=16 2>&1 | grep "^|"
grep -h "^memory\|chose\|fit:" /tmp/o/8b-qlora*.log | cut -c1-300 | head -6
tar czf $OUT0/r.tgz -C /tmp/o .
