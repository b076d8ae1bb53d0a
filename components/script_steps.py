"""Runs host scripts (components/scripts/*.sh) over SSH as pulumi-command steps.

A step copies its script and lib.sh to the host, then runs it with sudo. Parameters travel
as the SSH session's environment (sshd accepts them, see host_image.user_data) and secrets only
there: never in the command string, which the state and `pulumi preview` show. A step's
triggers hold its scripts' hashes, its parameters and the previous step's id, so editing a
script re-runs that step and the ones after it, and nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_command as command

from components.naming import child

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
REMOTE_DIR = "/home/ubuntu/vllm-deploy"


def file_digest(name: str) -> str:
    return hashlib.sha256((SCRIPTS_DIR / name).read_bytes()).hexdigest()


def script_digest(name: str, *companions: str) -> str:
    """sha256 of a script plus the lib.sh it sources (and any companion files it installs):
    what a step's triggers track."""
    parts = [file_digest("lib.sh"), file_digest(name), *(file_digest(c) for c in companions)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


class ScriptSteps:
    """Step factory bound to one host; children are parented to `parent`.

    Each factory has its own directory on the host and copies lib.sh there once, so steps
    running in parallel never read a lib.sh another copy is rewriting.
    """

    def __init__(
        self,
        parent: pulumi.Resource,
        name: str,
        connection: command.remote.ConnectionArgs,
        instance_id: pulumi.Input[str],
    ):
        self._parent = parent
        self._name = name
        self._connection = connection
        self._instance_id = instance_id  # a replaced instance is provisioned from scratch
        self.directory = f"{REMOTE_DIR}/{name}"
        # CopyToRemote creates only the last element of its remote path.
        self.workdir = command.remote.Command(
            child(name, "workdir"),
            connection=connection,
            create=f"mkdir -p {self.directory}",
            triggers=[instance_id],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        self._copies: dict[str, command.remote.CopyToRemote] = {}
        self._lib = self._copy("lib.sh", after=None)

    def _copy(self, script: str, *, after: Optional[pulumi.Resource]) -> command.remote.CopyToRemote:
        """One copy per script: a script run twice (wait_for_host) is copied once; the home
        directory survives reboots."""
        if script not in self._copies:
            self._copies[script] = self._new_copy(script, after=after)
        return self._copies[script]

    def _new_copy(self, script: str, *, after: Optional[pulumi.Resource]) -> command.remote.CopyToRemote:
        return command.remote.CopyToRemote(
            child(self._name, f"copy-{Path(script).stem}"),
            connection=self._connection,
            source=pulumi.FileAsset(str(SCRIPTS_DIR / script)),
            remote_path=f"{self.directory}/{script}",
            triggers=[file_digest(script), self._instance_id],
            opts=pulumi.ResourceOptions(
                parent=self._parent, depends_on=[self.workdir, *([after] if after else [])]
            ),
        )

    def run(
        self,
        role: str,
        script: str,
        *,
        after: Optional[pulumi.Resource],
        env: Optional[Mapping[str, pulumi.Input[str]]] = None,
        secret_env: Optional[Mapping[str, pulumi.Input[str]]] = None,
        extra_triggers: Sequence[pulumi.Input[str]] = (),
        log_output: Optional[bool] = None,
        secret_outputs: Optional[Sequence[str]] = None,
        timeout: str = "60m",
        companions: Sequence[str] = (),
        per_instance: bool = True,
        connection: Optional[command.remote.ConnectionArgs] = None,
    ) -> command.remote.Command:
        """Run `script` once, and again when its inputs change.

        `companions`: other scripts/ files the step installs (copied beside it, their hashes in
        its triggers). `per_instance=False`: a step whose work outlives the instance (on the
        model volume); it re-runs when its script, parameters or `extra_triggers` change, not
        when the instance or the step before it is replaced (`after` only orders it).
        `connection` replaces the factory's for this step's command.
        """
        copied = self._copy(script, after=after)
        for companion in companions:
            self._copy(companion, after=after)
        env = dict(env or {})
        environment: dict[str, pulumi.Input[str]] = dict(env)
        names = sorted(env)
        if secret_env:
            environment.update({k: pulumi.Output.secret(v) for k, v in secret_env.items()})
            names += sorted(secret_env)
        preserve = f"--preserve-env={','.join(names)} " if names else ""
        triggers: list[pulumi.Input[str]] = [script_digest(script, *companions)]
        if per_instance:
            triggers.append(self._instance_id)
        triggers += [pulumi.Output.concat(k, "=", v) for k, v in sorted(env.items())]
        triggers += list(extra_triggers)
        if after is not None and per_instance:
            triggers.append(after.id)
        # By default a step whose environment holds a secret logs nothing: a tool it runs
        # could echo it. Such steps also keep their output secret in the state, unless the
        # caller names the outputs that stay secret (a step whose stdout is a known-safe result).
        if log_output is None:
            log_output = not secret_env
        if secret_outputs is None:
            secret_outputs = ["stdout", "stderr"] if secret_env else []
        return command.remote.Command(
            child(self._name, role),
            connection=connection or self._connection,
            create=f"sudo {preserve}bash {self.directory}/{script}",
            # A step whose work outlives the instance: an update that is not a replacement (its
            # triggers hold every parameter) comes from the connection alone, i.e. a new instance's
            # host key or address, and has nothing to redo (pulumi-command runs `update` then).
            update=None if per_instance else "true",
            environment=environment or None,
            triggers=triggers,
            # Otherwise updates add PULUMI_COMMAND_STDOUT/STDERR, which sshd does not accept.
            add_previous_output_in_env=False,
            logging=command.remote.Logging.STDOUT_AND_STDERR if log_output else command.remote.Logging.NONE,
            opts=pulumi.ResourceOptions(
                parent=self._parent,
                depends_on=[self._lib, copied, *(self._copies[c] for c in companions), *([after] if after else [])],
                additional_secret_outputs=list(secret_outputs) or None,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
        )
