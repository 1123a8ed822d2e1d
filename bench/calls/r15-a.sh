# Round 15 GPU call A (bench/NOTES.md "Round 15"): the 8B bf16 LoRA step, ABAB: the round-14 default (Liger's loss
# with its host syncs, keys/values repeated for grouped heads) against this round's (loratui.train.liger_sync;
# grouped heads as they are where speed.varlen_takes_gqa says so), then the GQA probe, then each lever alone.
# Carry [".whl", ".gpu"] (as r14-a.sh). Results tarred after each part: $OUT/r.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
OUT0=$OUT; mkdir -p /tmp/o; export OUT=/tmp/o
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python3 -c "import torch;print(torch.__version__)"
B=lora.r=16+lora.alpha=32+lora.preset=llama-all; OLD=$B+liger_sync=on+gqa=repeat
python3 bench/speed.py --shape 8b --method lora --steps 42 --window-start 17 --batch 16 --no-seed --timeout 100 \
    --variants $OLD,$B,$OLD,$B 2>&1 | grep "^|"
grep -h "Error\|error:\|host syncs\|as they are" /tmp/o/8b-lora*.log | sort | uniq -c | tail -5
mkdir -p /tmp/o/ab && mv /tmp/o/*.json /tmp/o/ab/ 2>/dev/null; tar czf $OUT0/r.tgz -C /tmp/o .
timeout 40 python3 bench/gqa_probe.py 2>&1 | tail -12
python3 bench/speed.py --shape 8b --method lora --steps 50 --window-start 20 --batch 16 --no-seed --timeout 120 \
    --variants $B+liger_sync=on,$B+gqa=repeat,$B+nonblock=on+pygc=off 2>&1 | grep "^|"
tar czf $OUT0/r.tgz -C /tmp/o .
