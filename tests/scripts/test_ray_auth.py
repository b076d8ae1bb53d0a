"""ray_node.sh with Ray's token authentication (issue 27): the token from its secret environment
becomes a root-only file mounted read-only into the worker's container and named by
RAY_AUTH_TOKEN_PATH, with RAY_AUTH_MODE=token; it is in no docker argument, no output line, and
a rerun with the same token changes nothing. Stub docker and ip from test_ray_scripts."""

from __future__ import annotations

import stat

from tests.scripts.test_ray_scripts import docker_calls, head_port, host, worker  # noqa: F401  (fixtures)

TOKEN = "3f9a" * 16  # 64 hex characters, as the program generates


def test_the_worker_container_gets_the_token_as_a_read_only_file_and_token_mode(host, head_port):
    token_file = host / "etc" / "ray-auth-token"
    done = worker(host, head_port, VLLM_DEPLOY_RAY_AUTH_TOKEN=TOKEN, VLLM_DEPLOY_RAY_AUTH_TOKEN_FILE=str(token_file))
    assert done.returncode == 0, done.stderr
    (argv,) = docker_calls(host, "run")
    assert ["-e", "RAY_AUTH_MODE=token"] == argv[argv.index("RAY_AUTH_MODE=token") - 1:argv.index("RAY_AUTH_MODE=token") + 1]
    assert "RAY_AUTH_TOKEN_PATH=/run/vllm-deploy/ray-auth-token" in argv
    assert f"{token_file}:/run/vllm-deploy/ray-auth-token:ro" in argv
    assert token_file.read_text() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    every_call = " ".join(" ".join(call) for call in docker_calls(host))
    assert TOKEN not in every_call and TOKEN not in done.stdout + done.stderr

    again = worker(host, head_port, VLLM_DEPLOY_RAY_AUTH_TOKEN=TOKEN, VLLM_DEPLOY_RAY_AUTH_TOKEN_FILE=str(token_file))
    assert again.returncode == 0, again.stderr
    assert len(docker_calls(host, "run")) == 1, "same token, same launch spec: the container is left alone"


def test_without_a_token_nothing_about_auth_is_added(host, head_port):
    done = worker(host, head_port)
    assert done.returncode == 0, done.stderr
    (argv,) = docker_calls(host, "run")
    assert not [a for a in argv if "RAY_AUTH" in a]
