#!/usr/bin/env bash
# One short check on a machine with a CUDA GPU (what the device tool lends; CI never has one):
#  1. the tests that train, with --device auto picking the GPU there (real CUDA, not the meta device);
#  2. `pasture experiment paper` at --seeds 10 on the GPU, cold (GANs trained) and warm (GAN store),
#     on procedural demo images of the dev set's size and count (50 + 50 per split, 256 px).
# Run from the repository root: bash benchmarks/gpu_check.sh  (writes $OUT/gpu_check.log when OUT is set)
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 PASTURE_CACHE_DIR=/tmp/pasture-cache
LOG="${OUT:-/tmp}/gpu_check.log"
{
python3 -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, torch.cuda.get_device_name(0))"
nproc
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_train.py tests/test_gan.py \
    tests/test_distill.py tests/test_experiment.py tests/test_small_data.py 2>&1 | tail -25
python3 -c "from pasture.study.demo import write_demo_data; write_demo_data('/tmp/demo', per_class=50, size=256)"
for pass in cold warm; do
    started=$(date +%s.%N)
    python3 -m pasture.cli experiment paper /tmp/demo --out /tmp/paper_$pass --seeds 10 --device cuda --quiet | tail -8
    echo "paper --seeds 10 on cuda, $pass: $(python3 -c "print(round($(date +%s.%N) - $started, 1))") s"
done
} 2>&1 | tee "$LOG"
