"""Ray's token authentication across nodes (issue 27), under recording mocks: one generated token
(secret in the state), in the head's container as a root-only file named by RAY_AUTH_TOKEN_PATH
with RAY_AUTH_MODE=token, and handed to each worker's ray_node.sh in its secret environment only;
never in an env value, argv or a plain input. ray_node.sh's side: tests/scripts/test_ray_auth.py."""

from components.ray_cluster import RAY_AUTH_TOKEN_PATH
from tests.harness import plain_text, reveal

TCP_PAIR = {"model": "Qwen/Qwen2.5-7B-Instruct", "nodes": "2", "instanceType": "g5.2xlarge"}
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
PASSWORD = "random:index/randomPassword:RandomPassword"


def test_the_head_and_every_worker_share_one_secret_token_never_in_plain_text(program):
    run = program(TCP_PAIR)
    [generated] = [r for r in run.of_type(PASSWORD) if r.name.endswith("ray-auth-token")]
    assert generated.plain["length"] == 64 and generated.plain["special"] is False

    container = run.named("vllm-vllm-container")
    envs = dict(e.split("=", 1) for e in reveal(container.inputs["envs"]))
    assert envs["RAY_AUTH_MODE"] == "token" and envs["RAY_AUTH_TOKEN_PATH"] == RAY_AUTH_TOKEN_PATH
    [upload] = [u for u in reveal(container.inputs["uploads"]) if u["file"] == RAY_AUTH_TOKEN_PATH]
    assert upload["permissions"] == "0600"
    token = upload["content"]
    # The mocks answer every RandomPassword with one value: only the API key's variable holds it.
    assert token and [name for name, value in envs.items() if value == token] == ["VLLM_API_KEY"]

    join = run.named("vllm-node1-ray-ray")
    assert reveal(join.inputs["environment"])["VLLM_DEPLOY_RAY_AUTH_TOKEN"] == token
    assert "VLLM_DEPLOY_RAY_AUTH_TOKEN" in join.plain["create"]  # preserved by name, never by value
    for resource in (container, join, generated):  # secret wherever the state holds it
        assert token not in plain_text(resource.inputs), resource.name


def test_one_host_makes_no_ray_token(program):
    run = program(SMALL)
    assert not [r for r in run.of_type(PASSWORD) if r.name.endswith("ray-auth-token")]
    envs = dict(e.split("=", 1) for e in reveal(run.named("vllm-vllm-container").inputs["envs"]))
    assert "RAY_AUTH_MODE" not in envs
