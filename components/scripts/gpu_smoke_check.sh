#!/usr/bin/env bash
# Proves that a container sees the GPUs the instance was sized for: the same path
# (Docker + NVIDIA Container Toolkit + driver) the vLLM container will use.
#
# Environment:
#   VLLM_DEPLOY_EXPECTED_GPUS            number of GPUs the instance type has (required)
#   VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB  memory.total nvidia-smi reports for one such GPU, in MiB
#                                        (the catalog's nvidia-smi figure; 0 = do not check)
#   VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT how far a GPU's memory.total may stray from that figure,
#                                        in percent either way (default 2)
#   VLLM_DEPLOY_EXPECTED_GPU_NAME        a word of the GPU name nvidia-smi prints, e.g. A10G
#                                        (matched as whole words; empty = do not check)
#   VLLM_DEPLOY_SMOKE_IMAGE              image to run; the toolkit injects nvidia-smi (ubuntu:22.04)
#
# The memory is compared with what nvidia-smi reports, never with the EC2 API's figure (a T4 is
# listed as 16384 MiB and reports 15360 MiB). The default 2% admits the few-MiB-to-0.8% drift of
# one GPU model's memory.total between driver and board revisions (V100-SXM2-32GB: 32510 or 32768
# MiB) and still fails a GPU of another size: the closest sizes in the catalog are 2x apart or
# more, except A10G/L4 (23028/23034 MiB), which the name check tells apart.
#
# Stdout: one line, e.g.
#   VLLM_DEPLOY_GPUS=4 name="NVIDIA A10G" memory_mib=23028
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_EXPECTED_GPUS
: "${VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB:=0}"
: "${VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT:=2}"
require_uint VLLM_DEPLOY_EXPECTED_GPUS
require_uint VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB
require_uint VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT
expected=$((10#$VLLM_DEPLOY_EXPECTED_GPUS))
expected_mib=$((10#$VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB))
tolerance_pct=$((10#$VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT))
expected_name=${VLLM_DEPLOY_EXPECTED_GPU_NAME:-}
image=${VLLM_DEPLOY_SMOKE_IMAGE:-ubuntu:22.04}
if ((expected < 1)); then
  die "VLLM_DEPLOY_EXPECTED_GPUS must be at least 1, got $expected" "pass the GPU count of the instance type"
fi

# name_has_word NAME WORDS: WORDS appear in NAME as whole words ("L4" is not in "NVIDIA L40S").
name_has_word() {
  local name=" ${1//[^A-Za-z0-9]/ } " words=" ${2//[^A-Za-z0-9]/ } "
  [[ "$name" == *"$words"* ]]
}

mismatch() {
  printf '[vllm-deploy] %s: nvidia-smi inside the container reported:\n%s\n' "$VLLM_DEPLOY_STEP" "$output" >&2
  die "$1" "$2"
}

if ! docker image inspect "$image" >/dev/null 2>&1; then
  retry "docker pull $image" docker pull -q "$image" >&2 ||
    die "could not pull the smoke-test image $image" \
      "check the host's access to its registry, or set the smoke image to one the host can pull"
fi

# The same GPU request every GPU container of this program makes (lib.sh gpu_access_detect).
gpu_access_detect
log "requesting the GPUs with: ${GPU_ARGS[*]} (access: $GPU_ACCESS)"
output=$(docker run --rm "${GPU_ARGS[@]}" "$image" \
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>&1) || {
  rc=$?
  printf '%s\n' "$output" >&2
  die "docker run ${GPU_ARGS[*]} $image nvidia-smi failed (exit $rc)" "$(gpu_access_hint "$output")"
}

names=()
memories=()
while IFS=, read -r name memory; do
  [[ -n "$name" ]] || continue
  memory=${memory//[[:space:]]/}
  if [[ ! "$memory" =~ ^[0-9]+$ ]]; then
    mismatch "could not read the memory of GPU '$name' from nvidia-smi" \
      "check the driver on the host: nvidia-smi -q | less"
  fi
  names+=("$name")
  memories+=("$memory")
done <<<"$output"

count=${#names[@]}
if ((count != expected)); then
  mismatch "expected $expected GPU(s), the container sees $count" \
    "check the instance type has $expected GPU(s) and all are healthy (nvidia-smi; dmesg | grep -i nvrm), or fix the GPU count the deployment was sized for"
fi
smallest=${memories[0]}
for i in "${!memories[@]}"; do
  if [[ -n "$expected_name" ]] && ! name_has_word "${names[i]}" "$expected_name"; then
    mismatch "GPU $i is '${names[i]}', the plan was sized for $expected_name GPUs" \
      "check the instance type matches the sizing plan (pulumi stack output sizing)"
  fi
  if ((expected_mib > 0)); then
    diff=$((memories[i] - expected_mib))
    if ((diff < 0)); then diff=$((-diff)); fi
    if ((diff * 100 > expected_mib * tolerance_pct)); then
      mismatch "GPU $i (${names[i]}) reports $((memories[i])) MiB, expected $expected_mib MiB (nvidia-smi memory.total of the planned GPU, within ${tolerance_pct}%)" \
        "check the instance type matches the sizing plan (GPU model and memory), and that no GPU is in MIG or vGPU mode (nvidia-smi -q | grep -i mode)"
    fi
  fi
  if ((memories[i] < smallest)); then
    smallest=${memories[i]}
  fi
done

log "GPU check passed: $count x ${names[0]}, ${smallest} MiB each"
printf 'VLLM_DEPLOY_GPUS=%s name="%s" memory_mib=%s\n' "$count" "${names[0]}" "$smallest"
