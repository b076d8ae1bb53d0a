"""The stack config contract: defaults, and one clear error per bad value (pure, no Pulumi)."""

import pytest

from config.constants import DEFAULT_GPU_MEMORY_UTILIZATION
from config.images import DEFAULT_VLLM_IMAGE
from config.settings import KEYS, StackConfig
from config.validation import ConfigError, parse

MODEL = "Qwen/Qwen2.5-7B-Instruct"


def problems(**values) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse({"model": MODEL, **values})
    return caught.value.problems


def test_minimal_config_gets_production_defaults():
    cfg = parse({"model": MODEL})
    assert cfg.model_source == "huggingface"
    assert cfg.gpu_memory_utilization == DEFAULT_GPU_MEMORY_UTILIZATION
    assert cfg.tensor_parallel_size == "auto"
    assert cfg.vllm_image == DEFAULT_VLLM_IMAGE and not cfg.vllm_image.endswith(":latest")
    assert cfg.tls == "self-signed"
    assert cfg.ssh_allowed_cidrs == ["auto"], "SSH must default to this machine only, never the world"
    assert cfg.metrics_allowed_cidrs == [], "metrics must be closed by default"
    assert cfg.served_name == MODEL


def test_the_contract_keys_exist_with_their_stable_names():
    contract = {
        "model", "modelSource", "modelRevision", "servedModelName", "dtype", "quantization",
        "maxModelLen", "maxNumSeqs", "maxNumBatchedTokens", "gpuMemoryUtilization",
        "tensorParallelSize", "pipelineParallelSize", "ropeScaling", "vllmImage",
        "vllmExtraArgs", "instanceType", "spot", "maxHourlyPriceUsd", "diskSizeGb",
        "allowedCidrs", "sshAllowedCidrs", "domain", "tls",
    }
    assert contract <= set(KEYS)


@pytest.mark.parametrize(
    ("values", "key", "must_mention"),
    [
        ({"gpuMemoryUtilization": 1.5}, "gpuMemoryUtilization=1.5", "0.99"),
        ({"gpuMemoryUtilization": 0}, "gpuMemoryUtilization=0", "greater than 0"),
        ({"maxModelLen": -3}, "maxModelLen=-3", "greater than or equal to 256"),
        ({"quantization": "awq4"}, "quantization='awq4'", "did you mean 'awq'"),
        ({"allowedCidrs": ["10.0.0.0/33"]}, "allowedCidrs", "10.0.0.0/33"),
        ({"allowedCidrs": ["10.0.0.1/24"]}, "allowedCidrs", "did you mean '10.0.0.0/24'"),
        ({"tensorParallelSize": 3}, "tensorParallelSize=3", "1, 2, 4, 8"),
        ({"tensorParallelSize": "3"}, "tensorParallelSize='3'", "1, 2, 4, 8"),
        ({"dtype": "fp32"}, "dtype='fp32'", "'bfloat16'"),
        ({"vllmImage": "vllm/vllm-openai:latest"}, "vllmImage", "pin a version"),
        ({"vllmImage": "vllm/vllm-openai"}, "vllmImage", "pin a version"),
        ({"instanceType": "big-gpu"}, "instanceType='big-gpu'", "g6.xlarge"),
        ({"modelSource": "s3"}, "modelSource='s3'", "'huggingface'"),
        ({"ami": "centos"}, "ami='centos'", "dlami"),
        ({"ropeScaling": {"factor": 4}}, "ropeScaling", "rope_type"),
        ({"ropeScaling": {"rope_type": "yarn", "factor": 0.5}}, "ropeScaling", "greater than 1"),
        ({"sshAllowedCidrs": ["everyone"]}, "sshAllowedCidrs", "CIDR"),
        ({"spot": "sometimes"}, "spot='sometimes'", "bool"),
        ({"pipelineParallelSize": 2}, "pipelineParallelSize=2", "set nodes to 2 (or auto)"),
        ({"pipelineParallelSize": 2, "nodes": 3}, "pipelineParallelSize=2", "but nodes=3"),
        ({"nodes": 9}, "nodes=9", "from 1 to 8"),
        ({"nodes": "many"}, "nodes='many'", "auto or a whole number"),
        ({"domain": "not a domain"}, "domain", "llm.example.com"),
        ({"letsencryptEmail": "ops at example"}, "letsencryptEmail", "ops@example.com"),
        ({"monitoringRetentionSizeGib": 0}, "monitoringRetentionSizeGib=0", "greater than or equal to 1"),
        ({"grafanaAllowedCidrs": ["10.0.0.0/8", "nowhere"]}, "grafanaAllowedCidrs", "CIDR"),
        ({"idleStopMinutes": 2}, "idleStopMinutes=2", "greater than or equal to 5"),
        ({"modelVolumeSizeGb": 5}, "modelVolumeSizeGb=5", "greater than or equal to 10"),
        ({"retainModelVolume": "maybe"}, "retainModelVolume='maybe'", "bool"),
    ],
)
def test_each_bad_value_names_the_key_the_value_and_what_is_allowed(values, key, must_mention):
    found = problems(**values)
    assert len(found) == 1, found
    assert f"vllm-deploy:{key}" in found[0]
    assert must_mention in found[0]


def test_unknown_key_suggests_the_right_one():
    (message,) = problems(maxModelLength=4096)
    assert "vllm-deploy:maxModelLength is not a known key" in message
    assert "did you mean vllm-deploy:maxModelLen" in message


def test_all_problems_are_reported_at_once():
    found = problems(gpuMemoryUtilization=2, maxModelLen=0, quantization="int3")
    assert len(found) == 3


def test_missing_model_says_how_to_set_it():
    with pytest.raises(ConfigError) as caught:
        parse({})
    assert "pulumi config set model" in str(caught.value)


def test_idle_stop_is_off_by_default_and_refuses_a_server_without_metrics():
    cfg = parse({"model": MODEL})
    assert cfg.idle_stop_minutes is None and cfg.retain_model_volume is False
    assert parse({"model": MODEL, "idleStopMinutes": 30}).idle_stop_minutes == 30
    (message,) = problems(idleStopMinutes=30, vllmExtraArgs=["--disable-log-stats"])
    assert "vllm-deploy:idleStopMinutes=30" in message and "remove --disable-log-stats" in message
    # Without idle stop the flag is the user's business.
    assert parse({"model": MODEL, "vllmExtraArgs": ["--disable-log-stats"]}).vllm_extra_args


def test_letsencrypt_needs_a_domain():
    (message,) = problems(tls="letsencrypt")
    assert "domain" in message
    assert parse({"model": MODEL, "tls": "letsencrypt", "domain": "LLM.Example.com"}).domain == "llm.example.com"


def test_secrets_are_not_config_fields():
    with pytest.raises(ConfigError) as caught:
        parse({"model": MODEL, "apiKey": "plain"})
    assert "secret" in str(caught.value)
    assert "apiKey" not in StackConfig.model_fields and "api_key" not in StackConfig.model_fields


def test_ssh_auto_is_only_meaningful_for_ssh():
    assert parse({"model": MODEL, "sshAllowedCidrs": ["auto", "203.0.113.5"]}).ssh_allowed_cidrs == [
        "auto",
        "203.0.113.5/32",
    ]
    (message,) = problems(allowedCidrs=["auto"])
    assert "allowedCidrs" in message


def test_local_model_path_serves_under_its_directory_name():
    cfg = parse({"model": "/srv/models/my-finetune/"})
    assert cfg.is_local_model and cfg.served_name == "my-finetune"
    (message,) = problems(model="/srv/models/x", modelSource="modelscope")
    assert "local path" in message


def test_numbers_given_as_strings_by_the_cli_are_accepted():
    cfg = parse({"model": MODEL, "tensorParallelSize": "2", "maxModelLen": "8192"})
    assert cfg.tensor_parallel_size == 2 and cfg.max_model_len == 8192


# --- vllmImage: the pinned vLLM, or a confirmed other one ------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.33.0",
        "vllm/vllm-openai:v0.33.0@sha256:" + "a" * 64,  # tag and digest
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm-openai:v0.33.0",  # a mirror
        "vllm/vllm-openai:v0.33.0-cu126",  # a build of the same release
    ],
)
def test_an_image_of_the_pinned_vllm_is_accepted(image):
    assert parse({"model": MODEL, "vllmImage": image}).vllm_image == image


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.32.1",
        "vllm/vllm-openai:v0.34.0",
        "vllm/vllm-openai:v0.33.0rc1",
        "vllm/vllm-openai:nightly",
        "vllm/vllm-openai@sha256:" + "b" * 64,  # a digest alone names no version
        "acme/vllm-custom:2.1",
    ],
)
def test_another_vllm_is_refused_unless_confirmed_saying_what_goes_unchecked(image):
    (message,) = problems(vllmImage=image)
    assert f"vllm-deploy:vllmImage={image!r} is not known to be vLLM 0.33.0" in message
    for unchecked in ("flags", "memory model", "dtype and model-type rules"):
        assert unchecked in message
    assert "pulumi config set allowUnverifiedVllmImage true" in message
    assert "vllm/vllm-openai:v0.33.0@sha256:<digest>" in message
    # Both fixes work.
    assert parse({"model": MODEL, "vllmImage": image, "allowUnverifiedVllmImage": True}).vllm_image == image
    assert parse({"model": MODEL}).vllm_image == DEFAULT_VLLM_IMAGE


def test_monitoring_is_on_by_default_and_grafana_follows_the_operators_networks():
    cfg = parse({"model": MODEL, "allowedCidrs": ["203.0.113.0/24"], "sshAllowedCidrs": ["203.0.113.64/26"]})
    assert cfg.monitoring is True
    assert cfg.grafana_cidrs == ["203.0.113.64/26"]
    # Only where the security group lets them reach 443; `auto` waits for its resolution.
    wider = parse({"model": MODEL, "allowedCidrs": ["203.0.113.0/25", "192.0.2.0/24"],
                   "sshAllowedCidrs": ["auto", "203.0.113.0/24", "198.51.100.0/24", "192.0.2.8/29"]})
    assert wider.grafana_cidrs == ["192.0.2.8/29", "203.0.113.0/25"]
    narrower = parse({"model": MODEL, "allowedCidrs": ["203.0.113.0/24"], "grafanaAllowedCidrs": ["203.0.113.7"]})
    assert narrower.grafana_cidrs == ["203.0.113.7/32"]


def test_a_grafana_block_the_security_group_does_not_let_in_is_refused_naming_both_keys():
    (message,) = problems(allowedCidrs=["203.0.113.0/24"], grafanaAllowedCidrs=["203.0.113.0/25", "198.51.100.0/24"])
    assert "vllm-deploy:grafanaAllowedCidrs has 198.51.100.0/24" in message
    assert "vllm-deploy:allowedCidrs ['203.0.113.0/24']" in message
    assert "203.0.113.0/25" not in message.split(" outside ")[0], "a block inside allowedCidrs is fine"
    (wider,) = problems(allowedCidrs=["203.0.113.0/24"], grafanaAllowedCidrs=["203.0.112.0/23"])
    assert "203.0.112.0/23" in wider, "a wider block is only partly reachable"
    assert parse({"model": MODEL, "monitoring": False, "allowedCidrs": ["203.0.113.0/24"],
                  "grafanaAllowedCidrs": ["198.51.100.0/24"]}).monitoring is False


# --- settings valid one by one that together leave a feature unreachable -------------------------


def test_metrics_networks_must_be_inside_the_api_networks():
    """The security group opens 443, where /metrics is served, only to allowedCidrs."""
    (message,) = problems(allowedCidrs=["203.0.113.0/24"], metricsAllowedCidrs=["198.51.100.0/24"])
    assert "vllm-deploy:metricsAllowedCidrs entry '198.51.100.0/24' is outside vllm-deploy:allowedCidrs" in message
    assert "pulumi config set --path 'allowedCidrs[1]' 198.51.100.0/24" in message
    (partly,) = problems(allowedCidrs=["10.0.0.0/9"], metricsAllowedCidrs=["10.0.0.0/8"])
    assert "is partly (10.128.0.0/9) outside" in partly
    assert parse({"model": MODEL, "allowedCidrs": ["10.0.0.0/9", "10.128.0.0/9"],
                  "metricsAllowedCidrs": ["10.0.0.0/8", "10.1.2.3/32"]})
    assert parse({"model": MODEL, "metricsAllowedCidrs": ["198.51.100.0/24"]}), "default: the API is open to all"


def test_ipv6_networks_could_never_reach_the_ipv4_only_endpoint():
    found = problems(allowedCidrs=["0.0.0.0/0", "2001:db8::/32"], metricsAllowedCidrs=["2001:db8::/48"])
    assert len(found) == 2
    assert "vllm-deploy:allowedCidrs entry '2001:db8::/32' is IPv6" in found[0]
    assert "vllm-deploy:metricsAllowedCidrs entry '2001:db8::/48' is IPv6" in found[1]


def test_empty_access_lists_leave_the_api_or_provisioning_unreachable():
    (api,) = problems(allowedCidrs=[])
    assert "vllm-deploy:allowedCidrs is empty" in api and "0.0.0.0/0" in api
    (ssh,) = problems(sshAllowedCidrs=[])
    assert "vllm-deploy:sshAllowedCidrs is empty" in ssh and "[auto]" in ssh


def test_a_letsencrypt_email_without_letsencrypt_is_never_used():
    (message,) = problems(letsencryptEmail="ops@example.com")
    assert "vllm-deploy:letsencryptEmail" in message and "vllm-deploy:tls='self-signed'" in message
    assert parse({"model": MODEL, "tls": "letsencrypt", "domain": "llm.example.com",
                  "letsencryptEmail": "ops@example.com"}).letsencrypt_email == "ops@example.com"


def test_every_unreachable_combination_is_reported_at_once():
    found = problems(allowedCidrs=["203.0.113.0/24"], metricsAllowedCidrs=["198.51.100.0/24"],
                     sshAllowedCidrs=[], letsencryptEmail="ops@example.com")
    assert len(found) == 3


def test_concurrency_per_client_is_a_positive_count():
    (message,) = problems(maxConcurrentRequestsPerClient=0)
    assert "vllm-deploy:maxConcurrentRequestsPerClient=0" in message
    assert parse({"model": MODEL}).max_concurrent_requests_per_client is None, "derived from the plan"


def test_the_aws_providers_keys_in_the_projects_namespace_point_to_aws():
    (message,) = problems(region="eu-west-1")
    assert "vllm-deploy:region is not a known key" in message
    assert "pulumi config set aws:region <value>" in message


@pytest.mark.parametrize("key", ["maxModelLen", "rateLimitPerMinute", "maxNumSeqs", "gpuMemoryUtilization"])
def test_a_boolean_where_a_number_belongs_is_refused(key):
    (message,) = problems(**{key: True})
    assert f"vllm-deploy:{key}=True: expected a number, got a boolean" in message


def test_a_context_too_short_for_the_readiness_generation_is_refused():
    (message,) = problems(maxModelLen=16)
    assert "vllm-deploy:maxModelLen=16" in message and "256" in message
    assert parse({"model": MODEL, "maxModelLen": 256}).max_model_len == 256


@pytest.mark.parametrize("flag", ["--disable-log-stats", "--disable_log_stats", "--disable-log-stats=true"])
def test_idle_stop_without_request_metrics_is_refused_however_the_flag_is_spelled(flag):
    (message,) = problems(monitoring=False, idleStopMinutes=30, vllmExtraArgs=[flag])
    assert "vllm-deploy:idleStopMinutes=30 reads vLLM's request metrics" in message


def test_ssh_from_ipv6_only_could_never_reach_the_ipv4_host():
    (message,) = problems(sshAllowedCidrs=["2001:db8::/32"])
    assert "vllm-deploy:sshAllowedCidrs" in message and "only IPv6" in message
    assert parse({"model": MODEL, "sshAllowedCidrs": ["2001:db8::/32", "198.51.100.0/24"]})


def test_a_private_key_pasted_as_the_public_key_is_never_echoed():
    secret_line = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret_line}\n-----END OPENSSH PRIVATE KEY-----"
    (message,) = problems(sshPublicKey=key)
    assert "vllm-deploy:sshPublicKey" in message and secret_line not in message


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_a_rope_factor_that_is_not_a_finite_number_is_refused(factor):
    (message,) = problems(ropeScaling={"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": 32768})
    assert "vllm-deploy:ropeScaling" in message and "factor" in message


def test_the_cross_key_rules_read_only_values_a_stack_config_has():
    """config.rules names what it reads (CrossKeyValues) instead of importing StackConfig."""
    from config.rules import CrossKeyValues

    read = set(CrossKeyValues.__annotations__) | {"grafana_cidrs"}
    has = set(StackConfig.model_fields) | {n for n, v in vars(StackConfig).items() if isinstance(v, property)}
    assert read <= has, sorted(read - has)


# --- a newcomer's spellings of a key (the newcomer trial's findings) --------------------------

@pytest.mark.parametrize("spelling", ["max_model_len", "max-model-len"])
def test_vllms_spellings_of_a_key_are_refused_with_ours_and_a_fix_that_keeps_the_value(spelling):
    """vLLM's Python name (max_model_len) and CLI name (max-model-len) are not our keys: both are
    refused (never silently honoured), naming maxModelLen and a fix that sets it again."""
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct", spelling: 4096})
    text = str(err.value)
    assert f"vllm-deploy:{spelling} is not a known key; did you mean vllm-deploy:maxModelLen?" in text
    assert "pulumi config set maxModelLen <the same value>" in text
    fixed = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 4096})
    assert fixed.max_model_len == 4096


def test_one_of_our_keys_under_a_namespace_nobody_reads_is_refused_not_ignored():
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct", "vllm:maxModelLen": 4096})
    assert "you likely meant vllm-deploy:maxModelLen" in str(err.value)
    # A key of its own under an unknown namespace is not ours to refuse.
    assert parse({"model": "Qwen/Qwen2.5-7B-Instruct", "team:owner": "ml"}).max_model_len is None


def test_the_sections_rules_and_the_cross_key_rules_are_reported_together():
    """One preview shows every combination that cannot work (the adversarial review saw the
    tool and adapter rules hide the fleet's until fixed one by one)."""
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxReplicas": 4, "warmReplicas": 2,
               "toolCallParser": "hermes", "maxLoras": 4})
    text = str(err.value)
    for said in ("vllm-deploy:toolCallParser='hermes' does nothing without toolCalling",
                 "vllm-deploy:maxLoras=4 is set but vllm-deploy:loraAdapters is empty",
                 "vllm-deploy:maxReplicas=4 with vllm-deploy:replicas=1",
                 "vllm-deploy:warmReplicas=2 with vllm-deploy:replicas=1"):
        assert said in text


def test_an_error_inside_an_object_key_names_its_field_and_a_path_fix():
    """loraAdapters[0].rank or speculativeModel.numSpecTokens: the nested field is named, with
    `pulumi config set --path`, never the top key as "not a known key"."""
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct",
               "speculativeModel": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "numSpecTokens": 3}})
    text = str(err.value)
    assert "vllm-deploy:speculativeModel.numSpecTokens is not a known field here; did you mean numSpeculativeTokens?" in text
    assert "pulumi config set --path 'speculativeModel.numSpeculativeTokens' <the same value>" in text
    assert "speculativeModel is not a known key" not in text
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct", "loraAdapters": [{"name": "bad name!", "model": "org/x"}]})
    assert "vllm-deploy:loraAdapters[0].name='bad name!'" in str(err.value)
