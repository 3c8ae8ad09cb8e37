source .gpu/setup.sh >/dev/null 2>&1
export TSFUSE_CACHE_DIR=/tmp/tfcache
B="node --import tsx examples/bench.ts --backend cuda --config llama-3.2-1b --checkpoint-dir /tmp/ck"
$B --prompt 2016 --new-tokens 8 --runs 1 --cache-length 2048 --timeline > $OUT/t2016.txt 2>&1; tail -3 $OUT/t2016.txt
W="node --import tsx examples/bench.ts --backend webgpu --config llama-3.2-1b --prompt 32 --new-tokens 4 --runs 3"
for c in 36 513 2048; do echo "== cache $c"; $W --cache-length $c 2>&1 | grep -E 'prefill|decode ms per token \(3' ; done > $OUT/wcache.txt 2>&1
cat $OUT/wcache.txt
$W --cache-length 2048 --profile > $OUT/wprof2048.txt 2>&1; tail -30 $OUT/wprof2048.txt
