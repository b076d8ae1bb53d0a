#!/usr/bin/env bash
# Downloads the model weights onto the host (resumable), checks they are complete
# and records what was downloaded, so a re-run with the same inputs does nothing.
#
# Environment:
#   VLLM_DEPLOY_MODEL           hub id, e.g. Qwen/Qwen3-8B (required)
#   VLLM_DEPLOY_MODEL_SOURCE    huggingface | modelscope (default huggingface)
#   VLLM_DEPLOY_MODEL_REVISION  branch, tag or commit (default: the hub's default branch)
#   VLLM_DEPLOY_MODELS_DIR      root of all model directories, e.g. /data/models (required)
#   VLLM_DEPLOY_MODEL_DIR       the directory the container mounts; inside MODELS_DIR (required)
#   VLLM_DEPLOY_MODEL_BYTES     the weights' expected size in bytes (from the sizing): models
#                               downloaded earlier stay as long as the volume has room for it
#                               beside them, least recently used first to go (default: unknown,
#                               and they all go)
#   VLLM_DEPLOY_KEEP_OTHER_MODELS  1: keep models downloaded earlier whatever the room
#   VLLM_DEPLOY_MODEL_KIND      model (default): config.json and weights are checked;
#                               adapter: a LoRA adapter, adapter_config.json and
#                               adapter_model.{safetensors,bin,pt} (what vLLM 0.33 loads,
#                               vllm/lora/lora_model.py from_local_checkpoint) are checked
#   VLLM_DEPLOY_VENV            the downloaders' virtualenv (/opt/vllm-deploy/venv)
#   HF_TOKEN                    secret, optional: the Hugging Face token (huggingface only)
#   MODELSCOPE_API_TOKEN        secret, optional: the ModelScope token (modelscope only)
#                               Each hub's token reaches only that hub's downloader, only
#                               through its environment, and is masked in everything the
#                               downloader prints; the other hub's token is unset.
#
# Stdout: one line, VLLM_DEPLOY_MODEL_DIR=<dir>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned so every host gets the same, tested CLI flags.
HF_REQUIREMENTS=("huggingface_hub[hf-xet]==2.4.0" "hf_xet==1.8.0")
MODELSCOPE_REQUIREMENTS=("modelscope==1.40.2" "modelscope-hub==0.5.1")
MARKER_NAME=.vllm-deploy-download
MANIFEST_NAME=.vllm-deploy-manifest

require_env VLLM_DEPLOY_MODEL VLLM_DEPLOY_MODELS_DIR VLLM_DEPLOY_MODEL_DIR
model=$VLLM_DEPLOY_MODEL
source_hub=${VLLM_DEPLOY_MODEL_SOURCE:-huggingface}
revision=${VLLM_DEPLOY_MODEL_REVISION:-}
models_dir=${VLLM_DEPLOY_MODELS_DIR%/}
model_dir=${VLLM_DEPLOY_MODEL_DIR%/}
venv=${VLLM_DEPLOY_VENV:-/opt/vllm-deploy/venv}
kind=${VLLM_DEPLOY_MODEL_KIND:-model}
marker="$model_dir/$MARKER_NAME"
manifest="$model_dir/$MANIFEST_NAME"
: "${VLLM_DEPLOY_MODEL_BYTES:=0}"
require_uint VLLM_DEPLOY_MODEL_BYTES
model_bytes=$VLLM_DEPLOY_MODEL_BYTES

if [[ ! "$model" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
  die "VLLM_DEPLOY_MODEL must be a hub id like org/name, got '$model'" "set the model to a Hugging Face or ModelScope id"
fi
if [[ -n "$revision" && ! "$revision" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*$ ]]; then
  die "VLLM_DEPLOY_MODEL_REVISION is not a valid branch, tag or commit: '$revision'" "set the model revision to a branch, tag or commit id"
fi
case $kind in
  model | adapter) ;;
  *) die "VLLM_DEPLOY_MODEL_KIND must be model or adapter, got '$kind'" "set the kind to model or adapter" ;;
esac
case $source_hub in
  huggingface | modelscope) ;;
  *) die "VLLM_DEPLOY_MODEL_SOURCE must be huggingface or modelscope, got '$source_hub'" "set the model source to huggingface or modelscope" ;;
esac
if [[ "$model_dir" != "$models_dir"/* || "$model_dir" == *"/.."* ]]; then
  die "VLLM_DEPLOY_MODEL_DIR ($model_dir) is not inside VLLM_DEPLOY_MODELS_DIR ($models_dir)" \
    "pass a model directory under the models directory"
fi

# Token: read once into a non-exported variable, then exported only under the name
# the chosen downloader reads.
secret=""
if [[ "$source_hub" == huggingface ]]; then
  secret=${HF_TOKEN:-}
  unset MODELSCOPE_API_TOKEN
  if [[ -n "$secret" ]]; then export HF_TOKEN="$secret"; else unset HF_TOKEN; fi
else
  secret=${MODELSCOPE_API_TOKEN:-}
  unset HF_TOKEN
  if [[ -n "$secret" ]]; then export MODELSCOPE_API_TOKEN="$secret"; else unset MODELSCOPE_API_TOKEN; fi
fi

marker_content() {
  printf 'model=%s\nsource=%s\nrevision=%s\n' "$model" "$source_hub" "${revision:-default}"
}

# A LoRA adapter: its config and one weight file, non-empty.
check_adapter_files() {
  problems=()
  [[ -s "$model_dir/adapter_config.json" ]] || problems+=("adapter_config.json is missing or empty")
  local weights
  for weights in adapter_model.safetensors adapter_model.bin adapter_model.pt; do
    [[ -s "$model_dir/$weights" ]] && return "${#problems[@]}"
  done
  problems+=("no adapter_model.safetensors, adapter_model.bin or adapter_model.pt")
  return 1
}

# Fills `problems` with what is missing; returns 1 when anything is.
problems=()
check_model_files() {
  if [[ "$kind" == adapter ]]; then
    check_adapter_files
    return
  fi
  problems=()
  [[ -s "$model_dir/config.json" ]] || problems+=("config.json is missing or empty")
  local index shard found_index=0
  for index in "$model_dir/model.safetensors.index.json" "$model_dir/pytorch_model.bin.index.json"; do
    [[ -f "$index" ]] || continue
    found_index=1
    # Shard file names are the only JSON strings in an index that end in a weight suffix.
    while IFS= read -r shard; do
      [[ -s "$model_dir/$shard" ]] || problems+=("shard $shard (listed in ${index##*/}) is missing or empty")
    done < <(grep -o '"[^"]*\.\(safetensors\|bin\)"' "$index" | tr -d '"' | sort -u)
  done
  if ((found_index == 0)); then
    local weights=()
    shopt -s nullglob
    for shard in "$model_dir"/*.safetensors "$model_dir"/*.bin; do
      if [[ -s "$shard" ]]; then weights+=("$shard"); fi
    done
    shopt -u nullglob
    ((${#weights[@]} > 0)) || problems+=("no *.safetensors or *.bin weight files")
  fi
  ((${#problems[@]} == 0))
}

# The model's files with their sizes, one "size<TAB>path" line each, sorted: written after a
# verified download, compared before trusting what is on disk. Sizes, not checksums: hashing
# hundreds of GB takes minutes, the downloader verified the content as it fetched it, and what
# goes wrong on disk later (a truncated copy, a deleted shard) changes the listing.
file_listing() {
  find "$model_dir" -type f ! -path "$model_dir/.cache/*" ! -name "$MARKER_NAME" ! -name "$MANIFEST_NAME" \
    ! -name "*.tmp" -printf '%s\t%P\n' | LC_ALL=C sort
}

# Present and verified: our marker for these inputs, every weight file, and the same files
# with the same sizes as right after the download.
model_verified() {
  [[ -f "$marker" && "$(cat "$marker")" == "$(marker_content)" ]] || return 1
  check_model_files || return 1
  [[ -f "$manifest" && "$(file_listing)" == "$(cat "$manifest")" ]]
}

ensure_venv() {
  # A venv whose creation was killed can hold bin/python but no pip: rebuild it then.
  if [[ -x "$venv/bin/python" && -x "$venv/bin/pip" ]]; then
    return 0
  fi
  apt_install python3-venv
  log "creating the downloader virtualenv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 ||
    die "python3 -m venv $venv failed" "check python3 and python3-venv on the host (python3 -m venv --help)"
}

ensure_downloader() {
  local stamp="$venv/.vllm-deploy-$source_hub" requirements
  if [[ "$source_hub" == huggingface ]]; then
    requirements=("${HF_REQUIREMENTS[@]}")
  else
    requirements=("${MODELSCOPE_REQUIREMENTS[@]}")
  fi
  if [[ "$(cat "$stamp" 2>/dev/null)" == "${requirements[*]}" ]]; then
    return 0
  fi
  log "installing ${requirements[*]} into $venv"
  retry "pip install ${requirements[*]}" "$venv/bin/pip" install --disable-pip-version-check -q \
    "${requirements[@]}" >&2 ||
    die "pip install ${requirements[*]} failed" "check the host's access to PyPI (pip config, proxy), then re-run"
  printf '%s\n' "${requirements[*]}" >"$stamp"
}

# Masks the token in the downloader's output; pure bash, so the token is never an argument.
redact() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ -n "$secret" ]]; then
      line=${line//"$secret"/[redacted]}
    fi
    printf '%s\n' "$line"
  done
}

run_downloader() {
  local cmd
  if [[ "$source_hub" == huggingface ]]; then
    cmd=("$venv/bin/hf" download "$model" --local-dir "$model_dir")
  else
    cmd=("$venv/bin/modelscope" download "$model" --local-dir "$model_dir")
  fi
  # original/ holds a second copy of the weights in the publisher's native format
  # (Meta's Llama repositories); vLLM reads the Hugging Face format only.
  cmd+=(--exclude "original/*")
  if [[ -n "$revision" ]]; then
    cmd+=(--revision "$revision")
  fi
  "${cmd[@]}" 2>&1 | redact >&2
}

if model_verified; then
  touch "$marker" # most recently used: the last of the kept models to go when room runs short
  log "$model (${revision:-default revision}) is already in $model_dir and verified; nothing to download"
  printf 'VLLM_DEPLOY_MODEL_DIR=%s\n' "$model_dir"
  exit 0
fi

# Models this step downloaded before (they carry our marker), least recently used first.
other_models() {
  local other
  for other in "$models_dir"/*/; do
    other=${other%/}
    [[ "$other" == "$model_dir" || ! -f "$other/$MARKER_NAME" ]] && continue
    printf '%s\t%s\n' "$(date -r "$other/$MARKER_NAME" +%s)" "$other"
  done | LC_ALL=C sort -n | cut -f2-
}

# make_room: the volume is sized for one model; earlier models stay while there is room for
# this one beside them (its expected size + 10%, less what a resumed download already has).
# Without an expected size, all of them go. A running container keeps its weights in GPU
# memory; it does not read them again.
make_room() {
  local others=() other have need avail
  mapfile -t others < <(other_models)
  if ((model_bytes == 0)); then
    for other in "${others[@]}"; do
      log "removing the previous model in $other"
      rm -rf -- "$other"
    done
    return 0
  fi
  have=$(du -sb "$model_dir" 2>/dev/null | cut -f1) || have=0
  need=$((model_bytes + model_bytes / 10 - ${have:-0}))
  for other in "${others[@]}" ""; do
    avail=$(df -B1 --output=avail "$models_dir" | tail -n 1 | tr -dc 0-9)
    if ((avail >= need)); then
      if ((${#others[@]} > 0)); then
        log "keeping the models downloaded before: $((avail / 1000000000)) GB free for about $((need / 1000000000)) GB"
      fi
      return 0
    fi
    [[ -n "$other" ]] || break
    log "removing $other (least recently used) to make room: $((avail / 1000000000)) GB free, about $((need / 1000000000)) GB needed"
    rm -rf -- "$other"
    others=("${others[@]:1}")
  done
  log "only $((avail / 1000000000)) GB free on $models_dir for about $((need / 1000000000)) GB of weights; the download may run out of space (raise modelVolumeSizeGb)"
}

rm -f "$marker" "$manifest"
install -d -m 0755 "$models_dir" "$model_dir"
if [[ "${VLLM_DEPLOY_KEEP_OTHER_MODELS:-0}" != 1 ]]; then
  make_room
fi
ensure_venv
ensure_downloader

# Caches next to the models (the data volume), not on the small root disk; progress
# bars off because they only flood the deployment log.
export HF_HOME="$models_dir/.hf-home" MODELSCOPE_CACHE="$models_dir/.modelscope-cache"
export HF_HUB_DISABLE_PROGRESS_BARS=1 HF_XET_HIGH_PERFORMANCE=1 NO_COLOR=1

log "downloading $model (${revision:-default revision}) from $source_hub into $model_dir"
retry "download of $model from $source_hub" run_downloader ||
  die "downloading $model from $source_hub failed" \
    "check the model id and revision exist, that the token (hfToken) grants access to gated models, and the host's network; re-running resumes the download"

if ! check_model_files; then
  for problem in "${problems[@]}"; do
    log "incomplete download: $problem"
  done
  die "the download of $model into $model_dir is incomplete: ${problems[0]}" \
    "re-run to resume the download; check free disk space (df -h $models_dir)"
fi

file_listing >"$manifest.tmp"
mv "$manifest.tmp" "$manifest"
marker_content >"$marker.tmp"
mv "$marker.tmp" "$marker"
log "$model ready in $model_dir"
printf 'VLLM_DEPLOY_MODEL_DIR=%s\n' "$model_dir"
