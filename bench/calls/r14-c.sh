# Round 14 GPU call C: the adapters' copies again (call A: they failed at the first forward, fixed), with the host's
# copies and collector on top; then, time allowing, the 8B QLoRA fit at a 16 GB budget. Carry as r14-a.sh.
# Results are tarred after each part ($OUT/r.tgz), so a call cut short still brings back what it measured.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B=lora.r=16+lora.alpha=32+lora.preset=llama-all
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B,$B+copies=on,$B,$B+copies=on,$B+copies=on+nonblock=on+pygc=off 2>&1 | grep "^|"
grep -h "Error\|error:" /tmp/o/8b-lora*.log | tail -3
tar czf $OUT0/r.tgz -C /tmp/o .
timeout 40 python3 bench/gqa_probe.py 2>&1 | tail -12
python3 bench/speed.py --shape 8b --method qlora --steps 30 --window-start 15 --batch 4 --no-seed --timeout 130 \
    --variants budget=16+wide=off,budget=16 2>&1 | grep "^|"
grep -h "^memory\|chose\|fit:" /tmp/o/8b-qlora*.log | cut -c1-300 | head -6
tar czf $OUT0/r.tgz -C /tmp/o .
