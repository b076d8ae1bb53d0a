"""LoRA adapters and a speculative draft through the whole program under mocks: what is
downloaded, where it is mounted, what vLLM is told, what the sizing counts, and what is refused
before anything is created."""

from __future__ import annotations

import json

import pytest

from serving.flag_reader import check_flags
from sizing import hub
from tests.components.test_program import COMMAND, HF_TOKEN, SMALL, local_model, step, vllm_container
from tests.harness import is_secret, reveal

DRAFT = {"model": "Qwen/Qwen2.5-0.5B-Instruct", "numSpeculativeTokens": 4}
ADAPTERS = [{"name": "sql", "model": "acme/sql-lora"}, {"name": "chat", "model": "acme/chat-lora", "revision": "v2"}]


def adapter_config_in_cache(monkeypatch, tmp_path, ranks: dict[str, int]) -> None:
    """adapter_config.json as the hub would answer, in the sizer's cache (no network in tests)."""
    monkeypatch.setenv("VLLM_DEPLOY_MODEL_CACHE", str(tmp_path / "cache"))
    for model, rank in ranks.items():
        revision = "v2" if model == "acme/chat-lora" else "main"
        path = hub._cache_path("huggingface", model, revision, "adapter_config.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"r": rank, "peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]}))


def local_adapter(directory):
    directory.mkdir()
    (directory / "adapter_config.json").write_text('{"r": 8, "peft_type": "LORA"}')
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 512)
    return directory


def mounts_by_target(run) -> dict[str, dict]:
    return {m["target"]: m for m in vllm_container(run).plain["mounts"]}


def test_adapters_and_draft_are_downloaded_mounted_and_passed_by_container_path(program, monkeypatch, tmp_path):
    adapter_config_in_cache(monkeypatch, tmp_path, {"acme/sql-lora": 16, "acme/chat-lora": 64})
    run = program({**SMALL, "loraAdapters": ADAPTERS, "speculativeModel": DRAFT}, secrets={"hfToken": HF_TOKEN})
    args = vllm_container(run).plain["command"]
    check_flags(args[1:], source="recorded container args")
    # The rank vLLM needs is the largest adapter's (64, read from adapter_config.json).
    assert args[args.index("--max-lora-rank") + 1] == "64" and args[args.index("--max-loras") + 1] == "2"
    assert "--enable-lora" in args
    first = args.index("--lora-modules") + 1
    assert args[first:first + 2] == ["sql=/models/adapters/sql", "chat=/models/adapters/chat"]
    speculative = json.loads(args[args.index("--speculative-config") + 1])
    assert speculative == {"method": "draft_model", "model": "/models/draft", "num_speculative_tokens": 4}
    mounts = mounts_by_target(run)
    base = step(run, "model")
    for role, target, repo, revision, kind in (
        ("adapter-sql", "/models/adapters/sql", "acme/sql-lora", "", "adapter"),
        ("adapter-chat", "/models/adapters/chat", "acme/chat-lora", "v2", "adapter"),
        ("draft", "/models/draft", "Qwen/Qwen2.5-0.5B-Instruct", "", "model"),
    ):
        download = step(run, role)
        env = reveal(download.inputs["environment"])
        assert (env["VLLM_DEPLOY_MODEL"], env["VLLM_DEPLOY_MODEL_REVISION"], env["VLLM_DEPLOY_MODEL_KIND"]) == (repo, revision, kind)
        # Beside the base model on the volume, never removing it; mounted read-only where vLLM looks.
        assert env["VLLM_DEPLOY_KEEP_OTHER_MODELS"] == "1"
        assert env["VLLM_DEPLOY_MODEL_DIR"].startswith(env["VLLM_DEPLOY_MODELS_DIR"] + "/")
        assert mounts[target]["source"] == env["VLLM_DEPLOY_MODEL_DIR"] and mounts[target]["readOnly"] is True
        # The token reaches the step as a secret; a new base download runs it again.
        assert is_secret(download.inputs["environment"]) or is_secret(download.inputs["environment"]["HF_TOKEN"])
        assert base.urn in download.property_dependencies["triggers"]
    # Readiness checks every adapter; vLLM starts only once every add-on is on disk.
    ready = reveal(run.named("vllm-vllm-ready").inputs["environment"])
    assert ready["VLLM_DEPLOY_LORA_ADAPTERS"] == "sql chat"
    assert vllm_container(run).depends_on(step(run, "adapter-chat"))
    per_gpu = run.exports["sizing"].value["perGpu"]
    assert per_gpu["loraBuffersGib"] > 0 and per_gpu["draftWeightsGib"] > 0.8 and per_gpu["draftKvCacheGib"] > 0


def test_the_sizing_counts_the_add_ons_in_the_choice(program, monkeypatch, tmp_path):
    """The same model and limits on the same instance: the add-ons leave less headroom by their
    terms, and the report shows them."""
    adapter_config_in_cache(monkeypatch, tmp_path, {"acme/sql-lora": 64, "acme/chat-lora": 64})
    plain = program({**SMALL, "instanceType": "g6e.xlarge"}).exports["sizing"].value
    with_addons = program(
        {**SMALL, "instanceType": "g6e.xlarge", "loraAdapters": ADAPTERS, "speculativeModel": DRAFT}
    )
    sized = with_addons.exports["sizing"].value
    added = sized["perGpu"]["loraBuffersGib"] + sized["perGpu"]["draftWeightsGib"] + sized["perGpu"]["draftKvCacheGib"]
    assert plain["perGpu"]["headroomGib"] - sized["perGpu"]["headroomGib"] == pytest.approx(added, abs=0.02)
    assert any("LoRA buffers" in line and "create_lora_weights" in line for line in with_addons.logs)
    assert plain["modelVolumeGb"] <= sized["modelVolumeGb"]


def test_local_adapter_and_draft_directories_are_uploaded_and_mounted(program, tmp_path):
    adapter = local_adapter(tmp_path / "my-adapter")
    draft = local_model(tmp_path / "my-draft")
    run = program({
        **SMALL, "loraAdapters": [{"name": "mine", "model": str(adapter)}],
        "speculativeModel": {"model": str(draft), "numSpeculativeTokens": 3},
    })
    uploads = {r.name: r for r in run.of_type("command:remote:CopyToRemote")}
    mounts = mounts_by_target(run)
    assert mounts["/models/adapters/mine"]["source"] == f"{uploads['vllm-setup-adapter-mine-upload'].plain['remotePath']}/my-adapter"
    assert mounts["/models/draft"]["source"] == f"{uploads['vllm-setup-draft-upload'].plain['remotePath']}/my-draft"
    assert not [r for r in run.of_type(COMMAND) if r.name in ("vllm-setup-adapter-mine", "vllm-setup-draft")]
    args = vllm_container(run).plain["command"]
    assert args[args.index("--max-lora-rank") + 1] == "8"  # read from the local adapter_config.json


@pytest.mark.parametrize("config, message", [
    ({"loraAdapters": [{"name": "x", "model": "/nonexistent/adapter"}], "maxLoraRank": 16},
     "names the local directory /nonexistent/adapter, which does not exist on this machine"),
    ({"speculativeModel": {"model": "/nonexistent/draft", "numSpeculativeTokens": 2}},
     "speculativeModel.model='/nonexistent/draft'"),
    ({"vllmExtraArgs": ["--enable-lora", "--lora-modules", "sql=/home/me/sql-lora"]},
     "'/home/me/sql-lora' is a path the vLLM container cannot see"),
    ({"vllmExtraArgs": ["--enable-lora", "--lora-modules", "sql=acme/sql-lora"]},
     "'acme/sql-lora' is a Hub id the vLLM container cannot see"),
    ({"vllmExtraArgs": ["--lora-modules", "sql=/models/served/sql"]},
     "--lora-modules without --enable-lora"),
    ({"loraAdapters": ADAPTERS, "maxLoraRank": 16, "vllmExtraArgs": ["--max-lora-rank", "32"]},
     "--max-lora-rank is set by this stack from vllm-deploy:maxLoraRank"),
    ({"loraAdapters": ADAPTERS}, "vllm-deploy:maxLoraRank is needed"),
    ({"loraAdapters": [{"name": "Qwen/x", "model": "acme/x"}]}, "adapter name 'Qwen/x'"),
])
def test_what_the_container_could_never_load_is_refused_before_anything_is_created(program, config, message):
    run = program({**SMALL, **config}, expect_error=True)
    assert message in str(run.error)
    assert run.cloud_resources == []


def test_an_adapter_rank_above_max_lora_rank_is_refused_naming_both(program, monkeypatch, tmp_path):
    adapter_config_in_cache(monkeypatch, tmp_path, {"acme/sql-lora": 64, "acme/chat-lora": 8})
    run = program({**SMALL, "loraAdapters": ADAPTERS, "maxLoraRank": 32}, expect_error=True)
    assert "adapter 'sql' (acme/sql-lora) has rank r=64" in str(run.error)
    assert "Set maxLoraRank to 64" in str(run.error) and run.cloud_resources == []


def test_ngram_speculation_needs_no_download(program):
    run = program({**SMALL, "speculativeModel": {"method": "ngram", "numSpeculativeTokens": 3}})
    args = vllm_container(run).plain["command"]
    assert json.loads(args[args.index("--speculative-config") + 1]) == {"method": "ngram", "num_speculative_tokens": 3}
    assert not [r for r in run.of_type(COMMAND) if r.name == "vllm-setup-draft"]
    assert [m["target"] for m in vllm_container(run).plain["mounts"]] == ["/models/served"]


def test_a_fleet_bakes_the_adapters_and_draft_on_the_builder_and_its_replicas_mount_them(program):
    """Fixed at start, carried by the image (fleet-pitfalls P20, P22): the builder downloads them
    before the replica files are installed, and each replica mounts them where the argv says."""
    from tests.components.test_fleet_program import baked_files, prod_fleet

    run = prod_fleet(program, replicas=2, loraAdapters=[ADAPTERS[0]], maxLoraRank=16, speculativeModel=DRAFT)
    adapter, draft = run.named("vllm-builder-setup-adapter-sql"), run.named("vllm-builder-setup-draft")
    assert run.named("vllm-builder-replica-upload").depends_on(adapter)
    files = baked_files(run)
    env = dict(line.split("=", 1) for line in files["replica.env"].splitlines() if "=" in line)
    mounts = dict(pair.split(":") for pair in env["VLLM_DEPLOY_ADDON_MOUNTS"].split(","))
    host_dirs = {reveal(s.inputs["environment"])["VLLM_DEPLOY_MODEL_DIR"]: s for s in (adapter, draft)}
    assert set(mounts) == set(host_dirs)
    assert sorted(mounts.values()) == ["/models/adapters/sql", "/models/draft"]
    assert "sql=/models/adapters/sql" in files["vllm-args.json"]


def test_add_ons_across_nodes_are_refused_before_anything_is_created(program):
    run = program({"model": "meta-llama/Llama-3.1-405B-Instruct", "nodes": 2, "instanceType": "p5.48xlarge",
                   "maxModelLen": 8192, "speculativeModel": {"method": "ngram", "numSpeculativeTokens": 3}},
                  expect_error=True)
    assert "vllm-deploy:speculativeModel with a plan across 2 nodes" in str(run.error)
    assert run.cloud_resources == []
