set -x
source .gpu/setup.sh
export TSFUSE_CACHE_DIR=/tmp/tfcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
B="node --import tsx examples/bench.ts --backend cuda --config llama-3.2-1b --checkpoint-dir /tmp/ck"
$B --prompt 32 --new-tokens 16 --runs 1 --timeline --trace $OUT/decode32.json > $OUT/t32.txt 2>&1; tail -5 $OUT/t32.txt
$B --prompt 512 --new-tokens 4 --runs 1 --timeline > $OUT/t512.txt 2>&1; tail -3 $OUT/t512.txt
$B --prompt 2016 --new-tokens 8 --runs 1 --cache-length 2048 --timeline > $OUT/t2016.txt 2>&1; tail -3 $OUT/t2016.txt
node --import tsx examples/bench-prefill.ts --backend webgpu --config llama-3.2-1b --lengths 32,512 --runs 5 > $OUT/wgpu.txt 2>&1; tail -8 $OUT/wgpu.txt
