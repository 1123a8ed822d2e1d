# Round 15 GPU call A1 (what the device time left after refused starts allows): one pair on the 8B bf16 LoRA step,
# this round's default first (both levers on; its log says whether each took), then round 14's path; the GQA probe.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python3 -c "import torch;print(torch.__version__)"
B=lora.r=16+lora.alpha=32+lora.preset=llama-all; OLD=$B+liger_sync=on+gqa=repeat
python3 bench/speed.py --shape 8b --method lora --steps 40 --window-start 15 --batch 16 --no-seed --timeout 90 \
    --variants $B,$OLD 2>&1 | grep "^|"
grep -h "Error\|error:\|host syncs\|as they are" /tmp/o/8b-lora*.log | sort | uniq -c | tail -5
tar czf $OUT0/r.tgz -C /tmp/o .
timeout 30 python3 bench/gqa_probe.py 2>&1 | tail -12
