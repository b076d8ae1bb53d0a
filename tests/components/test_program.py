"""The whole program under recording mocks: invariants and wiring a user relies on."""

import json
import re

import pytest

from serving.flag_reader import check_flags
from tests.conftest import DEPLOYER_IP
from stack import preflight, pulumi_config
from tests.fakes.hugging_face_hub import FakeHub
from tests.harness import AwsWorld, is_secret, plain_text, reveal, stack_config

INSTANCE = "aws:ec2/instance:Instance"
CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
API_KEY = "sk-test-0f9e8d7c6b5a4f3e2d1c0b9a"
HF_TOKEN = "hf_testtoken_a1b2c3d4e5f6g7h8"
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}


def local_model(directory):
    """A small model directory on this machine (a Qwen2.5-0.5B-shaped config.json)."""
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896, "intermediate_size": 4864,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}))
    (directory / "model.safetensors").write_bytes(b"\0" * 1024)
    (directory / "tokenizer.json").write_text('{"version": "1.0"}')
    return directory


def step(run, role):
    return run.named(f"vllm-setup-{role}")


def vllm_container(run):
    return run.named("vllm-vllm-container")


# --- the stacks ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod", "large"])
def test_example_stack_deploys_and_exports_the_output_contract(program, stack):
    run = program(stack_config(stack), stack=stack)
    exports = run.exports
    for name in ("endpoint", "apiKey", "servedModelName", "instanceType", "instanceId", "publicIp",
                 "sshCommand", "hourlyPriceUsd", "sizing", "caCertificate"):
        assert name in exports, name
    assert re.fullmatch(r"https://[\d.]+/v1", exports["endpoint"].value)
    assert exports["apiKey"].secret and exports["sshPrivateKey"].secret
    instances = run.of_type(INSTANCE)
    assert len(instances) == exports["sizing"].value["nodes"] == len(exports["nodes"].value)
    for instance in instances:
        assert instance.plain["instanceType"] == exports["instanceType"].value == exports["sizing"].value["instanceType"]
    assert exports["hourlyPriceUsd"].value == exports["sizing"].value["hourlyPriceUsd"] > 0
    sizing = exports["sizing"].value
    for key in ("gpus", "gpuMemoryGib", "tensorParallelSize"):
        assert sizing[key] > 0
    for key in ("weightsGib", "kvCacheForSequencesGib", "kvCacheAllocatedGib", "overheadGib"):
        assert sizing["perGpu"][key] > 0
    assert exports["publicIp"].value in exports["sshCommand"].value
    assert any(re.search(r"per GPU( \(fullest stage\))?: weights", line) for line in run.logs), "the sizing report is logged at preview"


def test_instance_type_registered_is_the_sizing_decision_and_region_offerings_are_honoured(program):
    world = AwsWorld()
    everything = program(SMALL).one(INSTANCE).plain["instanceType"]
    world.offered_instance_types = {"g5.xlarge", "g6.xlarge", "g6e.xlarge"} - {everything}
    run = program(SMALL, world=world)
    chosen = run.one(INSTANCE).plain["instanceType"]
    assert chosen != everything and chosen in world.offered_instance_types
    assert any(i.token.endswith("getInstanceTypeOfferings") and i.args.get("locationType") == "region"
               for i in run.invokes)


# --- bad input: one clear error, nothing created -------------------------------------


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        # One case per stage that can refuse: the config model (a value, an unknown key), the
        # vLLM flag check, and sizing. test_settings.py covers every message of the first.
        ({"gpuMemoryUtilization": 1.5}, "vllm-deploy:gpuMemoryUtilization=1.5"),
        ({"maxModelLength": 4096}, "did you mean vllm-deploy:maxModelLen"),
        ({"vllmExtraArgs": ["--enable-metrics"]}, "--enable-metrics"),
        ({"instanceType": "g4dn.xlarge", "model": "Qwen/Qwen2.5-14B-Instruct"}, "g4dn.xlarge"),
        ({"model": "deepseek-ai/DeepSeek-R1", "dtype": "bfloat16", "quantization": "none"}, "DeepSeek"),
        # Valid values that together leave a feature unreachable, before and after sizing.
        ({"allowedCidrs": ["203.0.113.0/24"], "metricsAllowedCidrs": ["198.51.100.0/24"]},
         "vllm-deploy:metricsAllowedCidrs entry '198.51.100.0/24' is outside vllm-deploy:allowedCidrs"),
        ({"maxConcurrentRequestsPerClient": 60000}, "vllm-deploy:maxConcurrentRequestsPerClient=60000"),
    ],
)
def test_bad_input_fails_before_any_cloud_resource(program, values, mentions):
    run = program({**SMALL, **values}, expect_error=True)
    assert run.error is not None and mentions in str(run.error)
    assert run.cloud_resources == [], [r.urn for r in run.cloud_resources]


def test_a_confirmed_other_vllm_image_deploys_with_a_warning_of_what_goes_unchecked(program):
    image = "vllm/vllm-openai:v0.34.0"
    refused = program({**SMALL, "vllmImage": image}, expect_error=True)
    assert "allowUnverifiedVllmImage" in str(refused.error) and refused.cloud_resources == []
    run = program({**SMALL, "vllmImage": image, "allowUnverifiedVllmImage": "true"})
    assert run.named("vllm-vllm-image").plain["name"] == image
    assert any("is not known to be vLLM 0.33.0" in line and "memory model" in line for line in run.logs)


def test_plain_text_api_key_in_the_stack_file_is_refused(program):
    run = program(SMALL, secrets={"apiKey": API_KEY}, plaintext_secrets=True, expect_error=True)
    assert "pulumi config set --secret apiKey" in str(run.error)
    assert API_KEY not in str(run.error)
    assert run.cloud_resources == []


# --- secrets -------------------------------------------------------------------------


def test_secrets_never_appear_in_plain_text(program):
    run = program(SMALL, secrets={"apiKey": API_KEY, "hfToken": HF_TOKEN})
    for res in run.resources:
        text = plain_text(res.inputs)
        assert API_KEY not in text, f"API key in plain inputs of {res.urn}"
        assert HF_TOKEN not in text, f"HF token in plain inputs of {res.urn}"
        assert "MOCKPRIVATEKEY" not in text, f"SSH private key in plain inputs of {res.urn}"
    for name, export in run.exports.items():
        if API_KEY in str(export.value) or "MOCKPRIVATEKEY" in str(export.value):
            assert export.secret, f"output {name} holds a secret in plain text"
    assert run.exports["apiKey"].value == API_KEY and run.exports["apiKey"].secret


def test_api_key_reaches_vllm_only_as_a_secret_environment_variable(program):
    run = program(SMALL, secrets={"apiKey": API_KEY})
    container = vllm_container(run)
    assert is_secret(container.inputs["envs"])
    assert f"VLLM_API_KEY={API_KEY}" in reveal(container.inputs["envs"])
    assert not any(API_KEY in arg or arg == "--api-key" for arg in container.plain["command"])
    for cmd in run.of_type(COMMAND):
        assert API_KEY not in cmd.plain["create"]


MS_TOKEN = "ms-testtoken-9f8e7d6c5b4a"


def test_modelscope_downloads_the_hubs_own_id_with_its_own_token(program):
    run = program({"model": "meta-llama/Llama-3.1-8B-Instruct", "modelSource": "modelscope"},
                  secrets={"hfToken": HF_TOKEN, "modelscopeToken": MS_TOKEN})
    download = step(run, "model")
    env = reveal(download.inputs["environment"])
    assert env["VLLM_DEPLOY_MODEL"] == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    assert env["VLLM_DEPLOY_MODEL_SOURCE"] == "modelscope"
    assert env["MODELSCOPE_API_TOKEN"] == MS_TOKEN and "HF_TOKEN" not in env
    assert is_secret(download.inputs["environment"]) or is_secret(download.inputs["environment"]["MODELSCOPE_API_TOKEN"])
    assert any("the host downloads LLM-Research/Meta-Llama-3.1-8B-Instruct" in line for line in run.logs)
    for res in run.resources:
        text = plain_text(res.inputs)
        assert MS_TOKEN not in text and HF_TOKEN not in text, res.urn
    holders = {r.name for r in run.resources if MS_TOKEN in str(reveal(r.inputs))}
    assert holders == {"vllm-setup-model"}
    # The recorded step runs the real script: it downloads that id with that token only.
    assert "MODELSCOPE_API_TOKEN" in download.plain["create"] and MS_TOKEN not in download.plain["create"]


def test_hugging_face_downloads_never_get_the_modelscope_token(program):
    run = program(SMALL, secrets={"hfToken": HF_TOKEN, "modelscopeToken": MS_TOKEN})
    env = reveal(step(run, "model").inputs["environment"])
    assert env["HF_TOKEN"] == HF_TOKEN and "MODELSCOPE_API_TOKEN" not in env
    assert not [r.name for r in run.resources if MS_TOKEN in str(reveal(r.inputs))]


def test_plain_text_modelscope_token_in_the_stack_file_is_refused(program):
    run = program(SMALL, secrets={"modelscopeToken": MS_TOKEN}, plaintext_secrets=True, expect_error=True)
    assert "pulumi config set --secret modelscopeToken" in str(run.error)
    assert MS_TOKEN not in str(run.error) and run.cloud_resources == []


LLAMA = {"model": "meta-llama/Llama-3.1-8B-Instruct", "maxModelLen": 8192}


def test_a_gated_model_without_hf_token_is_refused_at_preview(program, monkeypatch):
    hub = FakeHub(gated="manual", readers={HF_TOKEN})
    monkeypatch.setattr(preflight, "hub_api", lambda: hub)
    run = program(LLAMA, expect_error=True)
    assert "vllm-deploy:model='meta-llama/Llama-3.1-8B-Instruct' is a gated model" in str(run.error)
    assert "pulumi config set --secret hfToken" in str(run.error)
    assert run.cloud_resources == []
    assert hub.calls[0][3] is False  # asked anonymously, as the host would download


def test_a_gated_model_with_a_token_that_can_read_it_deploys_and_the_token_stays_secret(program, monkeypatch):
    hub = FakeHub(gated="manual", readers={HF_TOKEN})
    monkeypatch.setattr(preflight, "hub_api", lambda: hub)
    run = program(LLAMA, secrets={"hfToken": HF_TOKEN})
    assert ("auth_check", LLAMA["model"], HF_TOKEN) in hub.calls  # the stack's token, resolved
    assert any("is gated on the Hugging Face Hub; hfToken can read it" in line for line in run.logs)
    assert not any(HF_TOKEN in line for line in run.logs)
    for res in run.resources:
        assert HF_TOKEN not in plain_text(res.inputs), res.urn
    refused = program(LLAMA, secrets={"hfToken": "hf_no_access_token"}, expect_error=True)
    assert "no access to it yet" in str(refused.error) and "hf_no_access_token" not in str(refused.error)
    assert refused.cloud_resources == []


def test_a_token_the_run_cannot_decrypt_is_never_sent_as_a_token(program, monkeypatch):
    """tools/plan has no passphrase: the placeholder it passes for an encrypted hfToken must not
    reach the hub, and the access check says it was skipped instead of refusing."""
    hub = FakeHub(gated="manual", readers={HF_TOKEN})
    monkeypatch.setattr(preflight, "hub_api", lambda: hub)
    monkeypatch.setenv(pulumi_config.UNREADABLE_SECRETS_ENV, "hfToken")
    run = program(LLAMA, secrets={"hfToken": "[secret]"})
    assert hub.calls == []
    assert any("access to meta-llama/Llama-3.1-8B-Instruct was not checked" in line for line in run.logs)


def test_the_guides_mistyped_model_is_refused_before_any_resource_with_the_id_it_meant(program):
    run = program({"model": "Qwen/Qwen2.5-70B-Instruct"}, expect_error=True)  # offline: not in the catalog
    assert "cannot size model 'Qwen/Qwen2.5-70B-Instruct'" in str(run.error)
    assert "Did you mean Qwen/Qwen2.5-72B-Instruct?" in str(run.error)
    assert run.cloud_resources == []


def test_an_unreachable_hub_warns_that_access_was_not_checked(program):
    run = program(LLAMA)  # tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)
    assert any("could not ask the Hugging Face Hub whether meta-llama/Llama-3.1-8B-Instruct is gated"
               in line for line in run.logs)


def test_hf_token_reaches_only_the_download_step_as_secret_environment(program):
    run = program(SMALL, secrets={"hfToken": HF_TOKEN})
    download = step(run, "model")
    env = download.inputs["environment"]
    token = env["HF_TOKEN"] if not is_secret(env) else env["value"]["HF_TOKEN"]
    assert is_secret(env) or is_secret(token)
    assert reveal(token) == HF_TOKEN
    assert "HF_TOKEN" in download.plain["create"] and HF_TOKEN not in download.plain["create"]
    assert download.plain["logging"] == "none", "a step that holds a secret must not log its output"
    holders = [r.name for r in run.resources if HF_TOKEN in str(reveal(r.inputs))]
    assert holders == ["vllm-setup-model"]


def test_generated_ssh_key_is_secret_and_written_only_under_the_users_ssh_dir(program, tmp_path):
    run = program(SMALL)
    assert run.exports["sshPrivateKey"].secret
    key_file = tmp_path / "home" / ".ssh" / "vllm-deploy" / "dev.key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    provider = run.one("pulumi:providers:docker")
    # As users type it: ssh expands the tilde, so the state is the same on every machine.
    assert "~/.ssh/vllm-deploy/dev.key" in provider.plain["sshOpts"]
    assert str(tmp_path) not in str(provider.plain)


# --- the host ------------------------------------------------------------------------


def test_security_group_opens_only_https_http_and_ssh_from_the_configured_cidrs(program):
    run = program({**SMALL, "allowedCidrs": ["203.0.113.0/24"]})
    rules = {(r.plain["fromPort"], r.plain.get("cidrIpv4") or r.plain.get("cidrIpv6")) for r in run.of_type(INGRESS)}
    assert rules == {(443, "203.0.113.0/24"), (80, "203.0.113.0/24"), (22, f"{DEPLOYER_IP}/32")}
    assert not any(r.plain["fromPort"] <= 8000 <= r.plain["toPort"] for r in run.of_type(INGRESS))


def test_ssh_is_open_to_the_world_only_when_asked(program):
    closed = program(SMALL)
    assert not any(r.plain["fromPort"] == 22 and r.plain.get("cidrIpv4") == "0.0.0.0/0" for r in closed.of_type(INGRESS))
    opened = program({**SMALL, "sshAllowedCidrs": ["0.0.0.0/0"]})
    assert any(r.plain["fromPort"] == 22 and r.plain.get("cidrIpv4") == "0.0.0.0/0" for r in opened.of_type(INGRESS))


def test_instance_is_hardened_and_sized(program):
    run = program(SMALL)
    instance = run.one(INSTANCE).plain
    assert instance["metadataOptions"]["httpTokens"] == "required"
    assert instance["metadataOptions"]["httpPutResponseHopLimit"] == 1, "containers must not reach the role"
    root = instance["rootBlockDevice"]
    assert root["encrypted"] is True and root["volumeType"] == "gp3"
    assert root["volumeSize"] == run.exports["sizing"].value["rootVolumeGb"]
    # A shutdown from the host (the idle-stop watcher) stops the instance: nothing is lost.
    assert instance["instanceInitiatedShutdownBehavior"] == "stop"
    profile = run.one("aws:iam/instanceProfile:InstanceProfile")
    assert run.one(INSTANCE).depends_on(profile)
    role = run.one("aws:iam/role:Role")
    assert profile.depends_on(role)
    ssm = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").plain
    assert ssm["policyArn"].endswith("AmazonSSMManagedInstanceCore")
    accepted = instance["userData"].split("AcceptEnv ", 1)[1].split("\n", 1)[0].split()
    assert {"VLLM_DEPLOY_*", "HF_TOKEN", "VLLM_API_KEY"} <= set(accepted)


def test_disk_size_follows_the_user_when_larger(program):
    run = program({**SMALL, "diskSizeGb": 500})
    assert run.one(INSTANCE).plain["rootBlockDevice"]["volumeSize"] == 500


def test_spot_stops_instead_of_terminating(program):
    run = program({**SMALL, "spot": True})
    market = run.one(INSTANCE).plain["instanceMarketOptions"]
    assert market["marketType"] == "spot"
    assert market["spotOptions"]["instanceInterruptionBehavior"] == "stop"


def test_new_instance_type_or_image_replaces_the_host_but_serving_flags_do_not(program):
    instance = program(SMALL).one(INSTANCE)
    assert "instanceType" in instance.replace_on_changes
    assert instance.delete_before_replace, "two GPU hosts at once would need double the quota"
    a = program(SMALL).one(INSTANCE).plain
    b = program({**SMALL, "maxNumSeqs": 64, "vllmExtraArgs": ["--enable-prefix-caching"]}).one(INSTANCE).plain
    assert a == b, "a serving flag must not change any input of the instance"


@pytest.mark.parametrize(
    ("ami", "owner", "pattern"),
    [
        ("dlami", "898082745236", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"),
        ("ubuntu", "099720109477", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"),
    ],
)
def test_ami_lookup_asks_for_the_right_owner_and_pattern(program, ami, owner, pattern):
    run = program({**SMALL, "ami": ami})
    (lookup,) = [i for i in run.invokes if i.token == "aws:ec2/getAmi:getAmi"]
    assert lookup.args["owners"] == [owner]
    filters = {f["name"]: f["values"] for f in lookup.args["filters"]}
    assert filters["name"] == [pattern] and filters["architecture"] == ["x86_64"]


def test_explicit_ami_id_is_used_without_lookup(program):
    run = program({**SMALL, "ami": "ami-0123456789abcdef1"})
    assert not [i for i in run.invokes if i.token == "aws:ec2/getAmi:getAmi"]
    assert run.one(INSTANCE).plain["ami"] == "ami-0123456789abcdef1"


def test_subnet_is_in_a_zone_that_offers_the_type(program):
    world = AwsWorld()
    world.zone_offerings = {"us-east-1a": set(), "us-east-1b": set(), "us-east-1c": {"g4dn.xlarge", "g6.xlarge"}}
    run = program(SMALL, world=world)
    assert run.one(INSTANCE).plain["subnetId"] == "subnet-c000000000000000"


def test_user_subnet_in_a_zone_without_the_type_is_refused(program):
    world = AwsWorld()
    world.zone_offerings = {"us-east-1a": set()}
    run = program({**SMALL, "subnetId": "subnet-a000000000000000"}, world=world, expect_error=True)
    assert "vllm-deploy:subnetId" in str(run.error) and "us-east-1a" in str(run.error)
    assert not run.of_type(INSTANCE)


def test_every_aws_resource_is_created_through_the_tagged_provider(program):
    run = program(SMALL)
    provider = run.one("pulumi:providers:aws")
    default_tags = provider.plain["defaultTags"]  # provider config travels JSON-encoded
    tags = (json.loads(default_tags) if isinstance(default_tags, str) else default_tags)["tags"]
    assert tags["project"] == "vllm-deploy" and tags["stack"] == "dev" and tags["managed-by"] == "pulumi"
    aws_resources = [r for r in run.cloud_resources if r.type.startswith("aws:")]
    assert aws_resources
    for res in aws_resources:
        assert res.provider.startswith(provider.urn + "::"), f"{res.urn} bypasses the tagged provider"
    root = run.one(INSTANCE).plain["rootBlockDevice"]["tags"]
    assert root["project"] == "vllm-deploy" and root["stack"] == "dev"


def test_every_resource_is_parented_to_a_component(program):
    run = program(SMALL)
    for res in run.resources:
        if res.type == "vllm-deploy:index:VllmDeployment":
            continue
        ancestors = [a.type for a in run.ancestors(res)]
        assert "vllm-deploy:index:VllmDeployment" in ancestors, res.urn


# --- provisioning order and re-runs --------------------------------------------------


def test_steps_run_in_order(program):
    run = program(SMALL)
    wait, driver, rebooted, docker, toolkit, smoke, disk, mount, model, idle = (
        step(run, r) for r in ("wait", "driver", "rebooted", "docker", "toolkit", "gpu-check", "disk",
                               "volume", "model", "idle-stop")
    )
    pause = run.named("vllm-setup-reboot-pause")

    chain = [wait, driver, pause, rebooted, docker, toolkit, smoke]
    for earlier, later in zip(chain, chain[1:]):
        assert reaches(run, later, earlier), f"{later.name} must wait for {earlier.name}"
    assert reaches(run, disk, rebooted) and reaches(run, idle, rebooted)
    assert reaches(run, model, mount) and reaches(run, mount, rebooted)
    assert reaches(run, mount, run.one(ATTACHMENT)), "the volume is mounted once it is attached"
    assert not reaches(run, model, docker), "download runs beside docker & co."
    container = vllm_container(run)
    assert reaches(run, container, smoke) and reaches(run, container, model)
    ready = run.named("vllm-vllm-ready")
    assert reaches(run, ready, container)
    assert reaches(run, run.named("vllm-proxy-container"), ready)


def test_each_step_reruns_when_the_one_before_it_does(program):
    run = program(SMALL)
    for later, earlier in (("driver", "wait"), ("docker", "rebooted"), ("toolkit", "docker"),
                           ("gpu-check", "toolkit"), ("disk", "rebooted"), ("volume", "rebooted"),
                           ("idle-stop", "rebooted")):
        triggers_from = step(run, later).property_dependencies.get("triggers", [])
        assert step(run, earlier).urn in triggers_from, f"{later} triggers must include {earlier}'s id"


def test_changing_the_model_reruns_the_download_but_not_the_driver(program):
    a = program(SMALL)
    b = program({**SMALL, "model": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert step(a, "driver").plain["triggers"] == step(b, "driver").plain["triggers"]
    assert step(a, "model").plain["triggers"] != step(b, "model").plain["triggers"]


def run_with_edited_script(program, monkeypatch, tmp_path, script):
    """The program run once as is, and once with `script` edited (a copy of the scripts dir)."""
    import shutil

    from components import script_steps

    before = program(SMALL)
    scripts = tmp_path / "scripts"
    shutil.copytree(script_steps.SCRIPTS_DIR, scripts)
    with open(scripts / script, "a") as handle:
        handle.write("\n# edited\n")
    monkeypatch.setattr(script_steps, "SCRIPTS_DIR", scripts)
    return before, program(SMALL)


def test_editing_a_script_reruns_only_its_step(program, monkeypatch, tmp_path):
    before, after = run_with_edited_script(program, monkeypatch, tmp_path, "install_docker.sh")
    changed = {
        role for role in ("wait", "driver", "rebooted", "docker", "toolkit", "gpu-check", "disk", "volume",
                          "model", "idle-stop")
        if step(before, role).plain["triggers"] != step(after, role).plain["triggers"]
    }
    assert changed == {"docker"}  # the later steps follow through the docker step's new id


def test_gpu_check_expects_what_sizing_chose(program):
    run = program(SMALL)
    env = step(run, "gpu-check").plain["environment"]
    sizing = run.exports["sizing"].value
    assert int(env["VLLM_DEPLOY_EXPECTED_GPUS"]) == sizing["gpus"]
    # The nvidia-smi figure of the chosen GPU (not the EC2 API's, not the CUDA total).
    assert int(env["VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB"]) == sizing["gpuMemoryNvidiaSmiMib"]
    assert sizing["gpuModel"] == "NVIDIA T4" and sizing["gpuMemoryNvidiaSmiMib"] == 15360


# --- serving -------------------------------------------------------------------------


def test_vllm_container_is_private_gpu_enabled_and_runs_valid_flags(program):
    run = program({**SMALL, "vllmExtraArgs": ["--enable-prefix-caching"]})
    container = vllm_container(run).plain
    assert container["ports"] == [{"internal": 8000, "external": 8000, "ip": "127.0.0.1"}]
    assert container["gpus"] == "all" and container["ipcMode"] == "host" and container["restart"] == "always"
    mount = container["mounts"][0]
    assert mount["readOnly"] is True and mount["source"] == reveal(step(run, "model").inputs["environment"])["VLLM_DEPLOY_MODEL_DIR"]
    check_flags(container["command"][1:], source="recorded container args")
    sizing = run.exports["sizing"].value
    args = container["command"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(sizing["tensorParallelSize"])
    assert args[args.index("--max-model-len") + 1] == str(sizing["maxModelLen"])
    assert "--enable-prefix-caching" in args


def test_nginx_upstream_is_the_vllm_port(program):
    run = program(SMALL)
    container = vllm_container(run).plain
    port = container["ports"][0]["external"]
    proxy = run.named("vllm-proxy-container")
    uploads = reveal(proxy.inputs["uploads"])
    conf = next(u["content"] for u in uploads if u["file"] == "/etc/nginx/nginx.conf")
    vllm_upstream = re.search(r"upstream vllm \{(.*?)\}", conf, re.S).group(1)
    upstreams = re.findall(r"server\s+127\.0\.0\.1:(\d+)", vllm_upstream)
    assert upstreams and {int(p) for p in upstreams} == {port}
    assert proxy.plain["networkMode"] == "host"
    assert any(u["file"].endswith(".key") for u in uploads), "the TLS key is uploaded into the container"
    assert is_secret(proxy.inputs["uploads"]), "uploads hold the TLS private key: secret in the state"


def test_proxy_limits_fit_the_instance_and_the_container_file_limit_matches(program):
    """Each stream holds two descriptors: nginx's workers raise themselves to
    worker_rlimit_nofile, which needs the container's hard limit at least that high."""
    from sizing.gpus import get as instance_info

    run = program(SMALL)
    proxy = run.named("vllm-proxy-container")
    conf = next(u["content"] for u in reveal(proxy.inputs["uploads"]) if u["file"] == "/etc/nginx/nginx.conf")
    (rlimit,) = re.findall(r"^worker_rlimit_nofile (\d+);", conf, re.M)
    assert proxy.plain["ulimits"] == [{"name": "nofile", "soft": int(rlimit), "hard": int(rlimit)}]
    (connections,) = re.findall(r"^\s*worker_connections (\d+);", conf, re.M)
    assert int(rlimit) > int(connections)
    vcpus = instance_info(run.exports["instanceType"].value).vcpus
    assert re.findall(r"^worker_processes (\d+);", conf, re.M) == [str(min(vcpus, 8))]


def test_without_a_domain_the_proxy_names_the_elastic_ip_never_the_clients_host(program):
    run = program(SMALL)
    ip = run.exports["publicIp"].value
    conf = next(u["content"] for u in reveal(run.named("vllm-proxy-container").inputs["uploads"])
                if u["file"] == "/etc/nginx/nginx.conf")
    assert f"return 301 https://{ip}/;" in conf and f"proxy_set_header Host {ip};" in conf
    assert "$host" not in conf


def test_endpoint_waits_for_readiness(program):
    run = program(SMALL)
    ready = run.named("vllm-vllm-ready").plain
    env = ready["environment"]
    assert env["VLLM_DEPLOY_SERVED_MODEL"] == run.exports["servedModelName"].value
    assert int(env["VLLM_DEPLOY_TIMEOUT_SECONDS"]) == 30 * 60


@pytest.mark.parametrize(("extra", "api"), [([], "auto"), (["--chat-template", "/models/served/t.jinja"], "chat")])
def test_the_first_generation_reads_the_model_directory_vllm_serves(program, extra, api):
    run = program({**SMALL, "vllmExtraArgs": extra})
    env = run.named("vllm-vllm-ready").plain["environment"]
    mount = vllm_container(run).plain["mounts"][0]
    assert env["VLLM_DEPLOY_MODEL_DIR"] == mount["source"], "the check reads what vLLM loads"
    assert env["VLLM_DEPLOY_GENERATION_API"] == api


def test_two_deployments_fit_in_one_program(program, monkeypatch, tmp_path):
    from tests import harness

    main = tmp_path / "__main__.py"
    main.write_text("from tests.components.test_program import two_deployments\ntwo_deployments()\n")
    monkeypatch.setattr(harness, "MAIN", main)
    run = program(SMALL)
    urns = [r.urn for r in run.resources]
    assert len(urns) == len(set(urns)), sorted(u for u in urns if urns.count(u) > 1)
    assert len(run.of_type(INSTANCE)) == 2


def two_deployments():
    """A program with two endpoints side by side (run by the test above)."""
    from components.deployment import VllmDeployment, VllmDeploymentArgs
    from config.validation import parse
    from sizing.choice import plan as size
    from stack.preflight import proxy_limits, vllm_command

    settings = parse({**SMALL, "sshAllowedCidrs": ["198.51.100.0/24"]})
    plan = size(settings)
    for name in ("blue", "green"):
        VllmDeployment(name, VllmDeploymentArgs(settings=settings, plan=plan, vllm_command=vllm_command(settings, plan),
                                                proxy_limits=proxy_limits(settings, plan)))


def test_letsencrypt_obtains_a_certificate_for_the_domain_before_the_proxy_starts(program):
    run = program({**SMALL, "tls": "letsencrypt", "domain": "llm.example.com", "letsencryptEmail": "ops@example.com",
                   "allowedCidrs": ["203.0.113.0/24"]})
    rules = {(r.plain["fromPort"], r.plain.get("cidrIpv4") or r.plain.get("cidrIpv6")) for r in run.of_type(INGRESS)}
    assert (80, "0.0.0.0/0") in rules and (80, "::/0") in rules, "Let's Encrypt validates from anywhere"
    assert {c for p, c in rules if p == 443} == {"203.0.113.0/24"}, "the API stays restricted"
    assert run.exports["endpoint"].value == "https://llm.example.com/v1"
    assert "caCertificate" not in run.exports, "a publicly trusted certificate needs no CA bundle"
    cert_step = run.named("vllm-proxy-certificate")
    assert cert_step.plain["environment"]["VLLM_DEPLOY_DOMAIN"] == "llm.example.com"
    assert cert_step.plain["environment"]["VLLM_DEPLOY_PUBLIC_IP"] == run.exports["publicIp"].value
    proxy = run.named("vllm-proxy-container")
    assert proxy.depends_on(cert_step)
    conf = next(u["content"] for u in reveal(proxy.inputs["uploads"]) if u["file"] == "/etc/nginx/nginx.conf")
    assert "/etc/letsencrypt/live/llm.example.com/fullchain.pem" in conf
    assert "/.well-known/acme-challenge/" in conf
    assert not run.of_type("tls:index/locallySignedCert:LocallySignedCert")


def test_instance_carries_the_capacity_advice_hook(program):
    instance = program(SMALL).one(INSTANCE)
    assert instance.error_hooks == ["vllm-host-instance-capacity-advice"]


def test_rope_scaling_keeps_the_models_rope_theta(program):
    """--hf-overrides replaces the model's whole RoPE block, so its rope_theta must ride along."""
    from sizing.hub import hub_spec

    def hub(url, headers, timeout):  # the network boundary: what huggingface.co would answer
        if url.endswith("config.json"):
            return json.dumps({"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
                               "intermediate_size": 18944, "num_attention_heads": 28,
                               "num_key_value_heads": 4, "vocab_size": 152064,
                               "max_position_embeddings": 32768, "rope_theta": 1000000.0}).encode()
        return None

    hub_spec("Qwen/Qwen2.5-7B-Instruct", fetch=hub)  # the first preview fetched and cached it
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    run = program({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 65536, "ropeScaling": rope,
                   "minConcurrentSequences": 1})
    args = vllm_container(run).plain["command"]
    overrides = json.loads(args[args.index("--hf-overrides") + 1])
    assert overrides["rope_scaling"]["factor"] == 4.0
    assert overrides["rope_parameters"]["rope_theta"] == 1000000.0


def test_rope_scaling_without_a_known_rope_theta_asks_for_it(program):
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    run = program({**SMALL, "ropeScaling": {**rope, "rope_theta": 1000000.0}})
    args = vllm_container(run).plain["command"]
    assert json.loads(args[args.index("--hf-overrides") + 1])["rope_parameters"]["rope_theta"] == 1000000.0


def test_every_copy_waits_for_its_remote_directory(program):
    """CopyToRemote creates only the last element of its path: the directory must exist first."""
    run = program(SMALL)
    copies = run.of_type("command:remote:CopyToRemote")
    assert copies
    for copy in copies:
        parent_dir = copy.plain["remotePath"].rsplit("/", 1)[0]
        makers = [run.by_urn(u) for u in copy.dependencies if run.by_urn(u).type == COMMAND]
        assert any(f"mkdir -p {parent_dir}" in m.plain["create"] for m in makers), copy.name


def test_a_local_model_directory_is_uploaded_not_downloaded(program, tmp_path):
    model = local_model(tmp_path / "my-finetune")
    run = program({"model": str(model), "maxModelLen": 4096})
    upload = run.named("vllm-setup-model-upload")
    assert not [r for r in run.of_type(COMMAND) if r.name == "vllm-setup-model"]
    # pulumi-command copies a directory *into* remotePath, under the directory's own name.
    assert vllm_container(run).plain["mounts"][0]["source"] == f"{upload.plain['remotePath']}/my-finetune"
    # Onto the model volume, into the directory the mount step made for the SSH user; again
    # when the volume is new, not when only the instance is.
    mount = step(run, "volume")
    assert upload.depends_on(mount) and mount.plain["environment"]["VLLM_DEPLOY_UPLOADS_DIR"] == upload.plain["remotePath"]
    assert run.one(VOLUME).urn in upload.property_dependencies["triggers"]
    assert run.one(INSTANCE).urn not in upload.property_dependencies["triggers"]
    assert run.exports["servedModelName"].value == "my-finetune"


def test_a_local_directory_without_weights_or_tokenizer_is_refused_before_any_resource(program, tmp_path):
    model = local_model(tmp_path / "config-only")
    (model / "model.safetensors").unlink()
    (model / "tokenizer.json").unlink()
    run = program({"model": str(model), "maxModelLen": 4096}, expect_error=True)
    message = str(run.error)
    assert f"vllm-deploy:model='{model}' is not a model directory vLLM can serve" in message
    assert "no weights (*.safetensors, *.bin or *.pt files)" in message and "no tokenizer" in message
    assert "hf download" in message
    assert run.cloud_resources == []


def test_docker_resources_wait_for_docker_and_live_and_die_with_the_instance(program):
    run = program(SMALL)
    instance = run.one(INSTANCE)
    gpu_check = step(run, "gpu-check")
    docker_resources = [r for r in run.resources if r.type.startswith("docker:")]
    # vLLM and nginx: an image and a container each; monitoring: four of each and a volume.
    assert len(docker_resources) == 4 + 9
    for res in docker_resources:
        assert res.deleted_with == instance.urn, f"{res.name}: destroy must not need SSH to the host"
        assert reaches(run, res, gpu_check), f"{res.name} must wait until Docker works"
        tied = res.plain.get("triggers") or {l["label"]: l["value"] for l in res.plain.get("labels", [])}
        assert tied["vllm-deploy.instance"] == run.exports["instanceId"].value, res.name


def reaches(run, later, earlier, seen=None):
    """Whether `later` depends on `earlier`, directly or through other resources."""
    seen = set() if seen is None else seen
    if later.depends_on(earlier):
        return True
    deps = set(later.dependencies) | {u for us in later.property_dependencies.values() for u in us}
    for urn in deps - seen:
        seen.add(urn)
        nxt = next((r for r in run.resources if r.urn == urn), None)
        if nxt is not None and reaches(run, nxt, earlier, seen):
            return True
    return False


def test_the_stacks_aws_settings_reach_the_explicit_provider(program):
    """The lookups at preview use the stack's aws:* settings; the resources must too."""
    role = [{"roleArn": "arn:aws:iam::123456789012:role/deployer", "sessionName": "vllm-deploy"}]
    run = program({**SMALL, "aws:profile": "team-gpu", "aws:assumeRoles": role,
                   "aws:defaultTags": {"tags": {"cost-center": "ml"}}})
    provider = run.one("pulumi:providers:aws").plain
    assert provider["profile"] == "team-gpu" and provider["region"] == "us-east-1"
    roles = json.loads(provider["assumeRoles"]) if isinstance(provider["assumeRoles"], str) else provider["assumeRoles"]
    assert roles[0]["roleArn"] == role[0]["roleArn"]
    tags = provider["defaultTags"]
    tags = (json.loads(tags) if isinstance(tags, str) else tags)["tags"]
    assert tags["cost-center"] == "ml" and tags["stack"] == "dev", "the stack's own tags are kept"


@pytest.mark.parametrize(
    ("trouble", "mentions"),
    [("has_default_vpc", "no default VPC; set vllm-deploy:vpcId"), ("images_available", "set vllm-deploy:ami")],
)
def test_a_lookup_that_finds_nothing_says_which_key_to_set(program, trouble, mentions):
    world = AwsWorld()
    setattr(world, trouble, False)
    run = program(SMALL, world=world, expect_error=True)
    assert mentions in str(run.error)
    assert not run.of_type(INSTANCE)


def test_a_bigger_model_grows_the_model_volume_and_its_filesystem_before_downloading(program):
    small = program(SMALL)
    big = program({**SMALL, "model": "Qwen/Qwen2.5-32B-Instruct"})
    small_gb, big_gb = (r.one(VOLUME).plain["size"] for r in (small, big))
    assert big_gb > small_gb and big_gb == big.exports["sizing"].value["modelVolumeGb"]
    assert small.one(INSTANCE).plain["rootBlockDevice"] == big.one(INSTANCE).plain["rootBlockDevice"]
    mount = step(big, "volume")
    assert int(mount.plain["environment"]["VLLM_DEPLOY_VOLUME_GB"]) == big_gb
    assert step(small, "volume").plain["triggers"] != mount.plain["triggers"], "the filesystem must grow"
    assert reaches(big, step(big, "model"), mount)


def test_the_image_is_pinned_when_the_host_is_created(program):
    """A newer AMI release must not replace the host; changing the `ami` setting must."""
    run = program(SMALL)
    (holder,) = run.of_type("random:index/randomShuffle:RandomShuffle")
    newest = next(i for i in run.invokes if i.token == "aws:ec2/getAmi:getAmi")
    assert holder.plain["inputs"] == ["ami-0123456789abcdef0"]
    assert "inputs" in holder.ignore_changes, "later lookups must not move the pinned image"
    assert run.one(INSTANCE).depends_on(holder)
    assert run.one(INSTANCE).plain["ami"] == holder.plain["inputs"][0]
    other = program({**SMALL, "ami": "ubuntu"}).of_type("random:index/randomShuffle:RandomShuffle")[0]
    assert other.name != holder.name, "a new choice is a new holder, created with the newest image"
    assert newest.args["mostRecent"] is True


def test_the_reboot_pause_is_the_same_command_on_every_machine(program, tmp_path):
    pause = program(SMALL).named("vllm-setup-reboot-pause").plain
    assert pause["create"] == "python3 components/local/wait_for_reboot.py"
    assert str(tmp_path) not in str(pause) and "/root" not in str(pause)


def test_a_replaced_instance_is_provisioned_again_and_a_new_container_checked_again(program):
    run = program(SMALL)
    instance = run.one(INSTANCE)
    on_the_volume = {"vllm-setup-model"}  # its work outlives the instance (test_the_model_volume_...)
    for res in run.of_type(COMMAND) + run.of_type("command:remote:CopyToRemote"):
        if res.name in on_the_volume:
            continue
        assert instance.urn in res.property_dependencies.get("triggers", []), f"{res.name} ignores a new host"
    ready = run.named("vllm-vllm-ready")
    assert vllm_container(run).urn in ready.property_dependencies["triggers"]
    for name in ("vllm-vllm-container", "vllm-proxy-container"):
        # One GPU / one port 443: the old container goes before the new one starts.
        assert run.named(name).delete_before_replace, name


def test_editing_lib_sh_reruns_every_step(program, monkeypatch, tmp_path):
    before, after = run_with_edited_script(program, monkeypatch, tmp_path, "lib.sh")
    for cmd in before.of_type(COMMAND):
        if cmd.plain["create"].startswith("sudo "):
            assert cmd.plain["triggers"] != after.named(cmd.name).plain["triggers"], cmd.name


def test_an_edited_local_model_is_uploaded_again(program, tmp_path):
    import os

    model = local_model(tmp_path / "tuned")
    weights = model / "model.safetensors"
    first = program({"model": str(model), "maxModelLen": 4096}).named("vllm-setup-model-upload").plain["triggers"]
    weights.write_bytes(b"\1" * 2048)
    os.utime(weights, (1_700_000_000, 1_700_000_000))
    second = program({"model": str(model), "maxModelLen": 4096}).named("vllm-setup-model-upload").plain["triggers"]
    assert first != second


def test_outputs_of_steps_holding_a_secret_stay_secret_in_the_state(program):
    run = program(SMALL, secrets={"hfToken": HF_TOKEN})
    assert {"stdout", "stderr"} <= set(step(run, "model").additional_secret_outputs)
    assert {"stdout", "stderr"} <= set(run.named("vllm-vllm-ready").additional_secret_outputs)
    assert "envs" in vllm_container(run).additional_secret_outputs


def test_tls_certificate_names_the_address_and_its_key_is_private(program):
    run = program(SMALL)
    csr = run.one("tls:index/certRequest:CertRequest").plain
    assert csr["ipAddresses"] == [run.exports["publicIp"].value]
    uploads = reveal(run.named("vllm-proxy-container").inputs["uploads"])
    key = next(u for u in uploads if u["file"].endswith(".key"))
    assert key["permissions"] == "0600"
    ca = run.one("tls:index/selfSignedCert:SelfSignedCert").plain
    assert ca["isCaCertificate"] is True and "cert_signing" in ca["allowedUses"]


@pytest.mark.parametrize(
    ("tokenizer_config", "extra", "flagged"),
    [({}, [], True), ({"chat_template": "{{ messages }}"}, [], False), ({}, ["--chat-template", "/models/served/t.jinja"], False)],
    ids=["base-model", "templated", "template-given"],
)
def test_a_model_without_a_chat_template_is_flagged_at_preview(program, tmp_path, tokenizer_config, extra, flagged):
    directory = local_model(tmp_path / "model")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "t.jinja").write_text("{{ messages }}")  # what --chat-template points at
    run = program({"model": str(directory), "maxModelLen": 4096, "vllmExtraArgs": extra})
    notes = [n for n in run.exports["sizing"].value["notes"] if "no chat template" in n]
    warnings = [line.message for line in run.log if line.severity == "warning" and "no chat template" in line.message]
    assert bool(notes) == bool(warnings) == flagged
    if flagged:
        assert "--chat-template" in notes[0] and "/v1/completions" in notes[0]
        assert any("note: " + notes[0] in line for line in run.logs), "in the sizing report"


def test_the_vllm_container_never_reaches_the_hub_at_start(program):
    """The weights are on the model volume; a container that fetched would hang or fail offline,
    and would need the hub token in its environment."""
    envs = reveal(vllm_container(program(SMALL)).inputs["envs"])
    assert "HF_HUB_OFFLINE=1" in envs


# --- tool calling (issue 28) ---------------------------------------------------------------


def test_tool_calling_serves_the_familys_parser_and_readiness_makes_a_tool_call(program):
    run = program({**SMALL, "toolCalling": True})
    command = vllm_container(run).plain["command"]
    assert "--enable-auto-tool-choice" in command
    assert command[command.index("--tool-call-parser") + 1] == "hermes"
    env = run.named("vllm-vllm-ready").plain["environment"]
    assert env["VLLM_DEPLOY_TOOL_CALL_PARSER"] == "hermes"
    assert not [line for line in run.log if "tool calling is off" in line.message]


def test_a_tool_capable_model_without_tool_calling_gets_a_hint_and_no_tool_call(program):
    run = program(SMALL)
    assert "VLLM_DEPLOY_TOOL_CALL_PARSER" not in run.named("vllm-vllm-ready").plain["environment"]
    hints = [line.message for line in run.log if line.severity == "warning" and "tool calling is off" in line.message]
    assert hints and "toolCalling true" in hints[0] and "hermes" in hints[0]


def test_tool_calling_for_a_model_without_a_known_parser_is_refused_before_anything_exists(program, tmp_path):
    directory = tmp_path / "custom"
    local_model(directory)
    refused = program({"model": str(directory), "maxModelLen": 4096, "toolCalling": True,
                       "servedModelName": "custom"}, expect_error=True)
    # its config.json names no architectures: no family, so no parser to pick
    assert "toolCalling=true" in str(refused.error) and "set toolCallParser" in str(refused.error)
    assert refused.cloud_resources == []
