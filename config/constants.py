"""Fixed values of the stack contract: the config namespace, the secret keys, defaults and the
limits the settings are checked against. Pure; imports nothing from this project."""

from __future__ import annotations

NAMESPACE = "vllm-deploy"

SECRET_KEYS = ("apiKey", "hfToken", "modelscopeToken")

# vLLM 0.33 default (vllm/config/cache.py); see shared reference vllm-notes.md section 4.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92

# Without an explicit maxModelLen we serve the model's own context, capped here: a 128k
# context multiplies the KV cache (and so the instance price) for a length few requests use.
DEFAULT_MAX_MODEL_LEN_CAP = 32768

# AWS GPU instances carry 1, 2, 4 or 8 GPUs; tensor parallelism spans the GPUs of one host.
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
MAX_NODES = 8  # most identical instances one model spans (pipeline stages across nodes)

# Methods we can size (bytes per weight are known for them); vLLM accepts more, but a
# method we cannot size would make the instance choice a guess.
QUANTIZATIONS = ("none", "awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "mxfp4")
ROPE_TYPES = ("yarn", "linear", "dynamic", "longrope", "llama3")

# vLLM 0.33 creates no stat loggers, so no `vllm:` Prometheus metrics, with this flag
# (vllm/v1/engine/async_llm.py: log_stats=not engine_args.disable_log_stats).
DISABLE_LOG_STATS = "--disable-log-stats"

# Replicas (issue 25): the most identical hosts one fleet runs behind its load balancer. The
# Auto Scaling group itself allows more; the bound keeps a typo (100) from asking for a
# hundred GPU hosts, and an instance refresh needs as many again while old and new overlap.
MAX_REPLICAS = 32
# The ALB's deregistration delay bounds the drain (fleet-pitfalls P7): 0 to 3600 s (AWS, "Edit
# target group attributes", deregistration_delay.timeout_seconds). 300 s is AWS's own default,
# long enough for a typical stream (a few thousand tokens at tens of tokens/s) to finish.
DEFAULT_DRAIN_SECONDS = 300
MAX_DRAIN_SECONDS = 3600

# Autoscaling (issue 26): the target of the fleet's target-tracking policy, in vLLM 0.33's gauge
# vllm:num_requests_waiting (vllm/v1/metrics/loggers.py: requests admitted but not yet scheduled,
# because the running batch is at max_num_seqs or the KV cache is full), averaged over the
# replicas. A target of 0 can never be tracked (fleet-pitfalls P19); 2 means a replica's batch is
# full and a short queue has formed behind it before a replica is added: a request then waits for
# a running one to finish rather than being served at once, which is what adding capacity fixes.
DEFAULT_SCALE_ON_WAITING_REQUESTS = 2.0
