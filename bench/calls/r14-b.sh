# Round 14 GPU call B (bench/NOTES.md "Round 13", items 1 and 5, and the GQA probe): ~430 s on one H100/H200.
# Same carry and install as r14-a.sh. Results: $OUT/r.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/gqa_probe.py 2>&1 | tail -20
python3 bench/speed.py --shape 8b --method qlora --steps 40 --window-start 20 --batch 4 --no-seed --timeout 120 \
    --variants budget=16+wide=off,budget=16,default 2>&1 | grep "^|"
grep -h "^memory" /tmp/o/*qlora*.log | cut -c1-300
python3 bench/speed.py --shape 1b --method lora --steps 60 --window-start 30 --batch 16 --no-seed \
    --variants host_trim=off,default,host_trim=off,default 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
