#!/usr/bin/env bash
# Proves that a container sees the GPUs the instance was sized for: the same path
# (Docker + NVIDIA Container Toolkit + driver) the vLLM container will use.
#
# Environment:
#   VLLM_DEPLOY_EXPECTED_GPUS       number of GPUs the instance type has (required)
#   VLLM_DEPLOY_MIN_GPU_MEMORY_MIB  memory each GPU must report, in MiB (default 0)
#   VLLM_DEPLOY_SMOKE_IMAGE         image to run; the toolkit injects nvidia-smi (ubuntu:22.04)
#
# Stdout: one line, e.g.
#   VLLM_DEPLOY_GPUS=4 name="NVIDIA A10G" memory_mib=23028
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_EXPECTED_GPUS
: "${VLLM_DEPLOY_MIN_GPU_MEMORY_MIB:=0}"
require_uint VLLM_DEPLOY_EXPECTED_GPUS
require_uint VLLM_DEPLOY_MIN_GPU_MEMORY_MIB
expected=$((10#$VLLM_DEPLOY_EXPECTED_GPUS))
min_mib=$((10#$VLLM_DEPLOY_MIN_GPU_MEMORY_MIB))
image=${VLLM_DEPLOY_SMOKE_IMAGE:-ubuntu:22.04}
if ((expected < 1)); then
  die "VLLM_DEPLOY_EXPECTED_GPUS must be at least 1, got $expected" "pass the GPU count of the instance type"
fi

mismatch() {
  printf '[vllm-deploy] %s: nvidia-smi inside the container reported:\n%s\n' "$VLLM_DEPLOY_STEP" "$output" >&2
  die "$1" "$2"
}

if ! docker image inspect "$image" >/dev/null 2>&1; then
  retry "docker pull $image" docker pull -q "$image" >&2 ||
    die "could not pull the smoke-test image $image" \
      "check the host's access to its registry, or set the smoke image to one the host can pull"
fi

output=$(docker run --rm --gpus all "$image" \
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>&1) || {
  rc=$?
  printf '%s\n' "$output" >&2
  die "docker run --gpus all $image nvidia-smi failed (exit $rc)" \
    "on the host check: nvidia-smi; docker info | grep -i runtimes; re-run install_nvidia_driver.sh and install_container_toolkit.sh"
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
  if ((memories[i] < min_mib)); then
    mismatch "GPU $i (${names[i]}) has ${memories[i]} MiB, the plan needs at least $min_mib MiB per GPU" \
      "check the instance type matches the sizing plan (GPU model and memory)"
  fi
  if ((memories[i] < smallest)); then
    smallest=${memories[i]}
  fi
done

log "GPU check passed: $count x ${names[0]}, ${smallest} MiB each"
printf 'VLLM_DEPLOY_GPUS=%s name="%s" memory_mib=%s\n' "$count" "${names[0]}" "$smallest"
