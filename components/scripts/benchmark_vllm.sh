#!/usr/bin/env bash
# A short, bounded benchmark of the vLLM server on this host's loopback with vLLM's own
# `vllm bench serve`, run from the pinned vllm/vllm-openai image: the `random` dataset with fixed
# input/output lengths and seed (the same prompts every run), at each --max-concurrency level.
# stdout: one JSON object, {"image", "inputLen", "outputLen", "seed", "results": [the
# --save-result file of each level]}; progress and the tool's report go to stderr.
# Env: VLLM_DEPLOY_PORT, VLLM_DEPLOY_IMAGE, VLLM_DEPLOY_SERVED_MODEL, VLLM_DEPLOY_MODEL_DIR
#      (the weights on this host: the tokenizer is read from there, offline),
#      VLLM_DEPLOY_BENCH_CONCURRENCY ("1 4 16"), VLLM_DEPLOY_BENCH_INPUT_LEN,
#      VLLM_DEPLOY_BENCH_OUTPUT_LEN, VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY,
#      VLLM_DEPLOY_BENCH_SEED, VLLM_DEPLOY_BENCH_WARMUPS, VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS,
#      VLLM_DEPLOY_BENCH_TRUST_REMOTE_CODE (1 when vLLM serves with --trust-remote-code),
#      VLLM_API_KEY (secret: reaches the tool as OPENAI_API_KEY through docker's environment,
#      `-e NAME` without a value, so never on a command line).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_IMAGE VLLM_DEPLOY_SERVED_MODEL VLLM_DEPLOY_MODEL_DIR VLLM_API_KEY
: "${VLLM_DEPLOY_PORT:=8000}" "${VLLM_DEPLOY_BENCH_CONCURRENCY:=1 4 16}"
: "${VLLM_DEPLOY_BENCH_INPUT_LEN:=512}" "${VLLM_DEPLOY_BENCH_OUTPUT_LEN:=128}"
: "${VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY:=8}" "${VLLM_DEPLOY_BENCH_SEED:=0}"
: "${VLLM_DEPLOY_BENCH_WARMUPS:=2}" "${VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS:=600}"
for name in VLLM_DEPLOY_PORT VLLM_DEPLOY_BENCH_INPUT_LEN VLLM_DEPLOY_BENCH_OUTPUT_LEN \
  VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY VLLM_DEPLOY_BENCH_SEED VLLM_DEPLOY_BENCH_WARMUPS \
  VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS; do
  require_uint "$name"
done
port=$VLLM_DEPLOY_PORT
levels=$VLLM_DEPLOY_BENCH_CONCURRENCY
input_len=$VLLM_DEPLOY_BENCH_INPUT_LEN
output_len=$VLLM_DEPLOY_BENCH_OUTPUT_LEN
per_request=$VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY
seed=$VLLM_DEPLOY_BENCH_SEED
warmups=$VLLM_DEPLOY_BENCH_WARMUPS
level_timeout=$VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS
[[ "$levels" =~ ^[0-9]+( [0-9]+)*$ ]] ||
  die "VLLM_DEPLOY_BENCH_CONCURRENCY must be positive integers separated by spaces, got '${levels}'" \
    "pass levels such as '1 4 16'"
[[ -d "$VLLM_DEPLOY_MODEL_DIR" ]] ||
  die "the model directory ${VLLM_DEPLOY_MODEL_DIR} does not exist" "re-run pulumi up (the download step puts it there)"

container=vllm-bench
results=$(mktemp -d)
cleanup() {
  docker rm --force "$container" >/dev/null 2>&1 || true
  rm -rf "$results"
}
trap cleanup EXIT
docker rm --force "$container" >/dev/null 2>&1 || true # a leftover of an interrupted run

extra=()
if [[ "${VLLM_DEPLOY_BENCH_TRUST_REMOTE_CODE:-0}" == 1 ]]; then
  extra+=(--trust-remote-code)
fi
export OPENAI_API_KEY="$VLLM_API_KEY"

files=()
for concurrency in $levels; do
  prompts=$((per_request * concurrency))
  log "level --max-concurrency ${concurrency}: ${prompts} prompts of ${input_len} tokens, ${output_len} tokens out"
  # --network host: the server listens on this host's 127.0.0.1 only (in the slice the IMDS
  # guard keeps away from IMDS). The tool's own report goes to stderr with everything else; the
  # result file is the record.
  if ! timeout "$level_timeout" docker run --rm --name "$container" --network host \
    --cgroup-parent vllm-containers.slice \
    -e OPENAI_API_KEY -e HF_HUB_OFFLINE=1 -e VLLM_NO_USAGE_STATS=1 \
    -v "${VLLM_DEPLOY_MODEL_DIR}:/models/served:ro" -v "${results}:/results" \
    --entrypoint vllm "$VLLM_DEPLOY_IMAGE" \
    bench serve --backend openai --host 127.0.0.1 --port "$port" --endpoint /v1/completions \
    --model "$VLLM_DEPLOY_SERVED_MODEL" --tokenizer /models/served "${extra[@]}" \
    --dataset-name random --random-input-len "$input_len" --random-output-len "$output_len" \
    --random-range-ratio 0 --num-prompts "$prompts" --seed "$seed" --temperature 0 \
    --max-concurrency "$concurrency" --num-warmups "$warmups" \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 --disable-tqdm \
    --save-result --result-dir /results --result-filename "c${concurrency}.json" >&2; then
    die "vllm bench serve failed at --max-concurrency ${concurrency} (its output is above; a run past ${level_timeout}s is stopped)" \
      "check the server (sudo docker logs --tail 100 vllm), or set benchmarkOnDeploy to false to deploy without the benchmark"
  fi
  [[ -s "${results}/c${concurrency}.json" ]] ||
    die "vllm bench serve wrote no result file for --max-concurrency ${concurrency}" \
      "run it by hand on the host to see why (docs/operations.md, 'Benchmark')"
  files+=("${results}/c${concurrency}.json")
done

printf '{"image": "%s", "inputLen": %d, "outputLen": %d, "seed": %d, "results": [' \
  "$VLLM_DEPLOY_IMAGE" "$input_len" "$output_len" "$seed"
separator=""
for file in "${files[@]}"; do
  printf '%s' "$separator"
  cat "$file"
  separator=", "
done
printf ']}\n'
log "benchmark done at concurrency ${levels// /, }"
