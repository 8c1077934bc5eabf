#!/usr/bin/env bash
# Tokens/s of the two pre-training objectives on the built-in corpus, Tiny, batch 16 x 128 tokens, fp32, one
# thread (the study's settings): masked LM against general distillation from the general MiniLM-L6.
# Usage: benchmarks/general_distill_speed.sh OUT_DIR [STEPS]   (run it on an idle machine for a published figure)
set -euo pipefail
out=${1:?OUT_DIR}; steps=${2:-100}
teacher=$(python -c "from miniberts.data.builtin import minilm_dir; print(minilm_dir())")
mkdir -p "$out"
[ -f "$out/corpus/SOURCES.md" ] || python -m miniberts data fetch pretraining --out "$out/corpus" >/dev/null
for objective in mlm general-distill; do
  extra=(); [ "$objective" = mlm ] || extra=(--teacher "$teacher")
  OMP_NUM_THREADS=1 python -m miniberts pretrain --model tiny --objective "$objective" "${extra[@]}" \
    --train-files "$out/corpus/train.txt" --eval-files "$out/corpus/eval.txt" --out "$out/$objective" \
    --steps "$steps" --batch-size 16 --seq-len 128 --lr 2e-3 --dropout 0 --dtype fp32 --eval-every 0 \
    --cache-dir "$out/cache" --no-progress --fresh >/dev/null 2>&1
  python -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['steps'], 'steps', m['tokens_per_s'], 'tokens/s', round(m['train_time_s'],1), 's')" "$out/$objective/metrics.json" "$objective"
done
