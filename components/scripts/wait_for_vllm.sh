#!/usr/bin/env bash
# Waits until vLLM serves: /health answers 200, /v1/models lists the served model, and one
# short generation succeeds (a model can be listed and still fail its first request: no chat
# template, a broken tokenizer, CUDA failing on the first batch).
# The generation is a chat completion when the model has a chat template, else a plain
# completion; which one is decided here from the model directory vLLM loads (see
# generation_api). On failure prints the response body, the container's last log lines and the
# usual causes.
# Env: VLLM_DEPLOY_PORT, VLLM_DEPLOY_CONTAINER, VLLM_DEPLOY_SERVED_MODEL,
#      VLLM_DEPLOY_TIMEOUT_SECONDS, VLLM_DEPLOY_MODEL_DIR (the weights on this host),
#      VLLM_DEPLOY_GENERATION_API (auto | chat | completion; chat when --chat-template is set),
#      VLLM_DEPLOY_TOOL_CALL_PARSER (the --tool-call-parser when toolCalling is on: then one
#      tool call is made too, see below),
#      VLLM_DEPLOY_LORA_ADAPTERS (the loraAdapters' names, space-separated: each must be listed by
#      /v1/models, and the first generates too; vLLM 0.33 lists static adapters beside the base
#      model, vllm/entrypoints/openai/models/serving.py show_available_models),
#      VLLM_API_KEY (secret: only ever fed to curl on stdin).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port="${VLLM_DEPLOY_PORT:-8000}"
container="${VLLM_DEPLOY_CONTAINER:-vllm}"
served="${VLLM_DEPLOY_SERVED_MODEL:?VLLM_DEPLOY_SERVED_MODEL is required}"
timeout="${VLLM_DEPLOY_TIMEOUT_SECONDS:-1800}"
interval="${VLLM_DEPLOY_POLL_SECONDS:-10}"
model_dir="${VLLM_DEPLOY_MODEL_DIR:-}"
api="${VLLM_DEPLOY_GENERATION_API:-auto}"
tool_parser="${VLLM_DEPLOY_TOOL_CALL_PARSER:-}"
# The first request can wait for lazily built kernels; a healthy server answers well within this.
generation_timeout="${VLLM_DEPLOY_GENERATION_TIMEOUT_SECONDS:-300}"
: "${VLLM_API_KEY:?VLLM_API_KEY is required}"
base="http://127.0.0.1:${port}"

explain_failure() {
  local why="$1" details="${2:-}"
  {
    echo "vLLM did not become ready: ${why}"
    if [[ -n "$details" ]]; then
      printf '%s\n' "$details"
    fi
    echo "--- last 80 lines of 'docker logs ${container}' ---"
    docker logs --tail 80 "$container" 2>&1 || echo "(no logs: the container does not exist)"
    echo "--- usual causes ---"
    echo "* CUDA out of memory / 'No available memory for the cache blocks': lower maxModelLen,"
    echo "  maxNumSeqs or gpuMemoryUtilization, use quantization or kvCacheDtype=fp8, or a larger instanceType."
    echo "* 'max_model_len ... larger than the maximum number of tokens that can be stored in KV cache':"
    echo "  lower maxModelLen or raise gpuMemoryUtilization."
    echo "* 'CUDA driver version is insufficient' / 'no CUDA-capable device': the host driver is too old"
    echo "  for this image (needs >= 580 for CUDA 13); use ami=dlami or a -cu129 vllmImage."
    echo "* Big models load slowly: raise readinessTimeoutMinutes."
    echo "* 'default chat template is no longer allowed': the model has no chat template; add"
    echo "  --chat-template <file or inline template> to vllmExtraArgs, or serve an instruct model."
  } >&2
  exit 1
}

# The key goes to curl on stdin (a config line), never on its command line; backslashes
# and double quotes are escaped as curl's config syntax wants.
key_config() {
  local key=${VLLM_API_KEY//\\/\\\\}
  key=${key//\"/\\\"}
  printf 'header = "Authorization: Bearer %s"\n' "$key"
}

get_with_key() {
  key_config | curl --silent --show-error --fail --max-time 10 --config - "$1"
}

# POST the JSON in file $2 to $1, the answer's body into file $3; prints the HTTP status.
post_with_key() {
  key_config |
    curl --silent --show-error --max-time "$generation_timeout" --config - \
      --header "Content-Type: application/json" --data-binary "@$2" \
      --output "$3" --write-out '%{http_code}' "$1"
}

deadline=$((SECONDS + timeout))
log "waiting up to ${timeout}s for ${base}/health"
until curl --silent --fail --max-time 5 --output /dev/null "${base}/health"; do
  state=$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$container" 2>/dev/null || echo "missing 0")
  read -r status restarts <<<"$state"
  if [[ "$status" == "missing" || "$status" == "exited" || "$status" == "dead" || "${restarts:-0}" -ge 3 ]]; then
    explain_failure "the container is ${status} after ${restarts} restarts"
  fi
  # Across nodes: the entrypoint (serve_on_ray_head.sh) gave up before starting vLLM because a
  # node never joined Ray; Docker restarts it, so the state alone would not tell for a while.
  # (Read whole before matching: grep -q stopping early would fail the pipe under pipefail.)
  recent=$(docker logs --tail 200 "$container" 2>&1 || true)
  if grep -qF "vllm serve was not started" <<<"$recent"; then
    explain_failure "the Ray cluster never formed: not every node joined (the log below names them)"
  fi
  if ((SECONDS >= deadline)); then
    explain_failure "no 200 from /health within ${timeout}s"
  fi
  sleep "$interval"
done

models=$(get_with_key "${base}/v1/models") || explain_failure "/v1/models refused the API key or failed"
# A fixed-string match: model names are full of regex characters (dots, slashes).
if ! grep -qF "\"${served}\"" <<<"$models"; then
  explain_failure "/v1/models does not list '${served}'"
fi

# chat if the model directory has a chat template where vLLM 0.33 looks for one
# (vllm/renderers/hf.py resolve_chat_template: the processor's chat_template.json or .jinja,
# then the tokenizer's chat_template in tokenizer_config.json or chat_template.jinja), or a
# mistral_common tokenizer, which has its own chat format (vllm/tokenizers/registry.py: tekken.json
# or tokenizer.model.v* beside consolidated*.safetensors). Prints "chat|completion reason".
generation_api() {
  local dir="$model_dir"
  if [[ "$api" != auto ]]; then
    echo "$api as configured"
  elif [[ -z "$dir" || ! -d "$dir" ]]; then
    echo "chat (no model directory to read)"
  elif [[ -f "$dir/chat_template.jinja" || -f "$dir/chat_template.json" ]]; then
    echo "chat ($dir has a chat template file)"
  elif [[ -f "$dir/tokenizer_config.json" ]] &&
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("chat_template") else 1)' \
      "$dir/tokenizer_config.json" 2>/dev/null; then
    echo "chat (tokenizer_config.json has a chat_template)"
  elif compgen -G "$dir/consolidated*.safetensors" >/dev/null &&
    { [[ -f "$dir/tekken.json" ]] || compgen -G "$dir/tokenizer.model.v*" >/dev/null; }; then
    echo "chat (a mistral_common tokenizer)"
  else
    echo "completion (no chat template in $dir)"
  fi
}

# A JSON string of $1 (backslashes and double quotes escaped).
json_string() {
  local text=${1//\\/\\\\}
  printf '"%s"' "${text//\"/\\\"}"
}

read -r -a adapters <<<"${VLLM_DEPLOY_LORA_ADAPTERS:-}"
for adapter in "${adapters[@]}"; do
  if ! grep -qF "\"${adapter}\"" <<<"$models"; then
    explain_failure "/v1/models does not list the LoRA adapter '${adapter}' (loraAdapters)" \
      "--- /v1/models ---"$'\n'"$(head -c 4000 <<<"$models")"$'\n'"vLLM loads every --lora-modules adapter at startup; look for 'No adapter found' or 'LoRA rank' below"
  fi
done

read -r kind why <<<"$(generation_api)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The request for model $1 (a JSON string) through $path.
generation_request() {
  if [[ "$kind" == chat ]]; then
    printf '{"model": %s, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}' "$1"
  else
    printf '{"model": %s, "prompt": "Hello, my name is", "max_tokens": 8, "temperature": 0}' "$1"
  fi
}
path=/v1/completions
if [[ "$kind" == chat ]]; then
  path=/v1/chat/completions
fi
# generate_or_fail MODEL WHAT: 8 tokens through ${path} from the model (or LoRA adapter) named
# MODEL; a status other than 200, or an answer without choices, fails readiness naming WHAT.
generate_or_fail() {
  local model=$1 what=$2 http_status body
  generation_request "$(json_string "$model")" >"$work/request.json"
  http_status=$(post_with_key "${base}${path}" "$work/request.json" "$work/response.json") || http_status="none"
  body=$(head -c 4000 "$work/response.json" 2>/dev/null || true)
  if [[ "$http_status" != 200 ]] || ! grep -qF '"choices"' <<<"$body"; then
    explain_failure "${what} failed (HTTP ${http_status})" \
      "--- response body (first 4000 bytes) ---"$'\n'"${body:-(empty)}"
  fi
}
log "generating 8 tokens through ${path}: ${kind} ${why}"
generate_or_fail "$served" "the first generation through ${path}"

# Tool calling on: one chat request with a tool and tool_choice "auto". vLLM answers 400 when
# auto tool choice is off (vllm/renderers/online_renderer.py), 500 when the parser fails; a
# parser that does not match the model's format leaves the call as text in `content`
# (vllm-project/vllm#17161), or extracts arguments that are not JSON (#22885). A model that
# answers in words without calling is not a failure: the parser ran.
tool_verdict() {
  python3 -c '
import json, sys
answer = json.load(open(sys.argv[1]))
choice = answer["choices"][0]
message = choice.get("message") or {}
calls = message.get("tool_calls") or []
for call in calls:
    function = call.get("function") or {}
    try:
        json.loads(function.get("arguments") or "")
    except ValueError:
        print("fail the call to %s has arguments that are not JSON: %r" % (function.get("name"), function.get("arguments")))
        sys.exit()
if calls:
    print("called " + ", ".join(str((c.get("function") or {}).get("name")) for c in calls))
    sys.exit()
text = message.get("content") or ""
marks = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "\"arguments\"", "\"parameters\"")
if sys.argv[2] in text and any(mark in text for mark in marks):
    print("fail the model wrote its call to %s as text and the parser left it in content (finish_reason %s)"
          % (sys.argv[2], choice.get("finish_reason")))
else:
    print("text the model answered without calling the tool")
' "$1" "$2"
}

if [[ -n "$tool_parser" ]]; then
  tool=get_weather
  printf '{"model": %s, "messages": [{"role": "user", "content": "What is the weather in Paris? Use the %s tool."}], "tools": [{"type": "function", "function": {"name": "%s", "description": "Current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], "tool_choice": "auto", "max_tokens": 128, "temperature": 0}' \
    "$(json_string "$served")" "$tool" "$tool" >"$work/tool_request.json"
  log "making one tool call through /v1/chat/completions (--tool-call-parser ${tool_parser})"
  http_status=$(post_with_key "${base}/v1/chat/completions" "$work/tool_request.json" "$work/tool_response.json") ||
    http_status="none"
  body=$(head -c 4000 "$work/tool_response.json" 2>/dev/null || true)
  fix="the --tool-call-parser ${tool_parser} must match the format the model writes calls in: set toolCallParser to the model's (vLLM's tool-calling docs), or toolCalling false"
  if [[ "$http_status" != 200 ]] || ! grep -qF '"choices"' <<<"$body"; then
    explain_failure "the tool call through /v1/chat/completions failed (HTTP ${http_status}); ${fix}" \
      "--- response body (first 4000 bytes) ---"$'\n'"${body:-(empty)}"
  fi
  verdict=$(tool_verdict "$work/tool_response.json" "$tool" 2>/dev/null) ||
    verdict="fail the answer is not a chat completion with a message"
  read -r outcome detail <<<"$verdict"
  if [[ "$outcome" == fail ]]; then
    explain_failure "the tool call through /v1/chat/completions: ${detail}; ${fix}" \
      "--- response body (first 4000 bytes) ---"$'\n'"${body}"
  fi
  log "tool call through --tool-call-parser ${tool_parser}: ${outcome} ${detail}"
fi

# One generation through a LoRA adapter: it is applied only when a request names it.
if ((${#adapters[@]} > 0)); then
  log "generating 8 tokens through LoRA adapter '${adapters[0]}'"
  generate_or_fail "${adapters[0]}" "the generation through LoRA adapter '${adapters[0]}'"
fi
log "vLLM is ready, serves '${served}' and generated through ${path}"
