"""components/scripts/builder_vllm.sh with stub `docker` (tests/scripts/replica_stubs): on a
fleet's builder, before the bake, the replica's own vLLM (its baked argv and environment) serves
for the post-deploy benchmark, the key never in argv, output or on disk, and is stopped and
removed before bake_cleanup.sh."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.replica import replica_files
from tests.scripts.replica_host import ReplicaHost, Run, settings_for, single_host
from tests.scripts.test_host_scripts import _shellcheck, assert_failed, assert_ok

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "components" / "scripts"
KEY = "sk-builder-9Rt2uVx0Lm4Qa7Zp"


@pytest.fixture
def builder(tmp_path: Path):
    config, argv, site = single_host()
    settings = settings_for(config)
    host = ReplicaHost(tmp_path, replica_files(vllm_argv=argv, nginx_site=site, settings=settings))
    steps = tmp_path / "steps"  # where ScriptSteps copies a step's script and lib.sh
    steps.mkdir()
    for name in ("builder_vllm.sh", "lib.sh"):
        shutil.copy(SCRIPTS / name, steps / name)
    return host, steps, argv, settings


def run(builder, action: str, **env: str) -> Run:
    host, steps, _, _ = builder
    log = host.state / "calls.log"
    before = len(log.read_text().splitlines())
    full = {**host.env, "VLLM_DEPLOY_BUILDER_ACTION": action, "VLLM_DEPLOY_REPLICA_DIR": str(host.dir),
            "VLLM_DEPLOY_BUILDER_SECRETS_DIR": str(host.root / "run" / "vllm-deploy-builder"), **env}
    proc = subprocess.run(["bash", str(steps / "builder_vllm.sh")], env=full, cwd=host.root,
                          capture_output=True, text=True, timeout=60)
    calls = [shlex.split(line) for line in log.read_text().splitlines()[before:]]
    return Run("builder_vllm.sh", proc.returncode, proc.stdout, proc.stderr, calls)


def test_it_passes_shellcheck_from_its_place_in_the_repository():
    proc = subprocess.run([_shellcheck(), "-x", "--severity=style", "components/scripts/builder_vllm.sh"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_start_serves_the_replicas_argv_with_the_key_only_in_a_mounted_tmpfs_file(builder):
    host, _, argv, settings = builder
    started = run(builder, "start", VLLM_API_KEY=KEY)
    assert_ok(started)
    assert started.stdout == "VLLM_DEPLOY_BUILDER_VLLM=started\n"
    (vllm,) = [c for c in started.called("docker") if c[:1] == ["run"]]
    at = vllm.index(settings.vllm_image)
    # The image's `vllm serve` through a shell that reads the key first, with the replica's argv;
    # the single host's argv carries --shutdown-timeout itself (serving.vllm_args).
    assert vllm[vllm.index("--entrypoint") + 1] == "/bin/sh"
    assert vllm[at + 1] == "-c" and vllm[at + 2].endswith('exec vllm serve "$@"') and vllm[at + 3] == "vllm-serve"
    assert vllm[at + 4:] == argv and argv[argv.index("--shutdown-timeout") + 1] == "30", "the argv every replica boots with"
    assert vllm[vllm.index("--name") + 1] == "vllm-builder"
    assert "--restart" not in vllm, "nothing restarts it on the builder"
    assert vllm[vllm.index("-p") + 1] == "127.0.0.1:8000:8000"
    mounts = [vllm[i + 1] for i, a in enumerate(vllm) if a == "-v"]
    secrets_dir = host.root / "run" / "vllm-deploy-builder"
    assert f"{host.models}:/models/served:ro" in mounts
    assert f"{secrets_dir / 'api-key'}:/run/secrets/vllm-api-key:ro" in mounts
    # No --env-file carries the key: Docker would keep its value in the container's configuration
    # on the root volume the image is made of.
    names = (host.state / "containers" / "vllm-builder.env-names").read_text().split()
    assert sorted(names) == ["HF_HUB_OFFLINE", "VLLM_CACHE_ROOT", "VLLM_NO_USAGE_STATS"], "the replica's environment"
    # The key: never on a command line or in the output; only in the 0600 file of the 0700 tmpfs
    # directory the container reads.
    assert KEY not in host.calls_text() and KEY not in started.stdout + started.stderr
    assert (secrets_dir / "api-key").read_text() == KEY
    assert oct((secrets_dir / "api-key").stat().st_mode & 0o777) == "0o600"
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"


def test_stop_removes_the_container_and_is_idempotent(builder):
    host, _, _, _ = builder
    assert_ok(run(builder, "start", VLLM_API_KEY=KEY))
    stopped = run(builder, "stop")
    assert_ok(stopped)
    assert ["stop", "-t", "60", "vllm-builder"] in stopped.called("docker"), "the replica's stop timeout"
    assert not (host.state / "containers" / "vllm-builder").exists()
    assert not (host.root / "run" / "vllm-deploy-builder").exists()
    again = run(builder, "stop")
    assert_ok(again)
    assert not [c for c in again.called("docker") if c[:1] in (["stop"], ["rm"])]


def test_start_without_a_key_or_a_model_fails_clearly_and_starts_nothing(builder):
    host, _, _, _ = builder
    no_key = run(builder, "start")
    assert_failed(no_key, "VLLM_API_KEY")
    (host.models / "config.json").unlink()
    no_model = run(builder, "start", VLLM_API_KEY=KEY)
    assert_failed(no_model, f"no model at {host.models} (no config.json)")
    assert not [c for c in no_key.called("docker") + no_model.called("docker") if c[:1] == ["run"]]
    assert KEY not in no_model.stdout + no_model.stderr
