"""A preview writes nothing on the machine that runs it (issue 23: a CI preview of prod must not
leave prod's SSH private key on the runner).

"An existing stack" under the mocks: every resource already has its id and its outputs (the
generated key included), as the engine hands them over from the state in `pulumi preview`.
The recording engine models a *new* stack's preview (empty ids, so computed outputs stay
unknown and no `apply` runs), which would pass whether or not the program checks for a dry
run; here the key is known, so only the program's own `is_dry_run()` check keeps it on disk.
"""

from __future__ import annotations

import pytest

from plan import engine
from tests.harness import stack_config


@pytest.fixture
def existing_stack(monkeypatch):
    """Previews answer every resource with an id, as for resources the state already holds."""
    def new_resource(self, args):
        extra = self.computed(args.typ, args.name, args.inputs) if self.computed else {}
        return engine._resource_id(args.typ, args.name), {**args.inputs, **extra}

    monkeypatch.setattr(engine.RecordingMocks, "new_resource", new_resource)


def ssh_files(home):
    return sorted(str(p.relative_to(home)) for p in (home / ".ssh").rglob("*")) if (home / ".ssh").exists() else []


def test_a_preview_of_an_existing_prod_stack_writes_no_file_under_ssh(program, existing_stack, tmp_path):
    run = program(stack_config("prod"), stack="prod", preview=True)
    provider = run.one("pulumi:providers:docker")
    # The key was known to this preview (the provider names the file), and still not written.
    assert "~/.ssh/vllm-deploy/prod.key" in provider.plain["sshOpts"]
    assert ssh_files(tmp_path / "home") == []


def test_an_update_of_the_same_stack_writes_the_key_where_the_docs_say(program, existing_stack, tmp_path):
    program(stack_config("prod"), stack="prod")
    home = tmp_path / "home"
    # The key, and the pinned host key for the Docker provider (docs/host-keys.md).
    assert ssh_files(home) == [".ssh/vllm-deploy", ".ssh/vllm-deploy/prod.key", ".ssh/vllm-deploy/prod.vllm.known_hosts"]
    key = home / ".ssh" / "vllm-deploy" / "prod.key"
    assert (key.stat().st_mode & 0o777) == 0o600 and "PRIVATE KEY" in key.read_text()
    assert ((home / ".ssh" / "vllm-deploy").stat().st_mode & 0o777) == 0o700
