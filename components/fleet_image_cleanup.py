"""The lifecycle of a fleet's baked images after they are made (fleet-pitfalls P9, P11).

`aws.ec2.AmiFromInstance` is retained on delete (components.fleet_image), so Pulumi never
deregisters an image the group may still launch. These two local commands, run where Pulumi
runs (components/local/prune_images.py, boto3, the deployer's credentials), remove them when
nothing needs them any more:

- `image-prune` runs once per new image, only after the instance refresh onto it has succeeded
  (it depends on FleetGroup's refresh wait, which fails `pulumi up` otherwise): it keeps the
  new image and the previous one, and removes this stack's older images and their snapshots.
- `image-destroy` does nothing on `up`; its delete runs on `pulumi destroy` (or when the fleet
  leaves the program), after the group, its launch template and the image resource are gone
  (the image resource depends on it, so it is deleted last): it removes every image of this
  stack and its snapshots. It has no triggers, so no change replaces it (a replacement would run
  its delete).
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from components.host_setup import PROJECT_ROOT
from components.deployer_aws import local_aws_environment
from components.naming import PROJECT, child

PRUNE_IMAGES = PROJECT_ROOT / "components" / "local" / "prune_images.py"
# The tag prune_images.py selects this stack's images by (its STACK_ID_TAG, kept equal by a test).
STACK_ID_TAG = "vllm-deploy-stack-id"


def prune_command(mode: str) -> str:
    """The shell command that runs prune_images.py in `mode` with the project's .venv (boto3)
    when there is one (relative paths: the command is part of the state, the same anywhere)."""
    return (
        'if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; '
        f'exec "$py" {PRUNE_IMAGES.relative_to(PROJECT_ROOT)} {mode}'
    )


def _environment(region: str, stack: str, stack_id: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
    """The script's settings: this stack (its project, name and random id, the images' tags) and
    the deployer's Region and profile."""
    return {"PROJECT": PROJECT, "STACK": stack, "STACK_ID": stack_id, **local_aws_environment(region)}


def destroy_guard(
    name: str, *, region: str, stack: str, stack_id: pulumi.Input[str], parent: pulumi.Resource,
) -> command.local.Command:
    """The command whose delete removes every baked image of this stack. Make the image resource
    depend on it, so it is deleted after the image, the launch template and the group."""
    return command.local.Command(
        child(name, "image-destroy"),
        create=f"echo 'pulumi destroy removes the baked images of stack {stack} and their snapshots'",
        delete=prune_command("destroy"),
        environment=_environment(region, stack, stack_id),
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent, custom_timeouts=pulumi.CustomTimeouts(delete="30m")),
    )


def prune_after_refresh(
    name: str, *, region: str, stack: str, stack_id: pulumi.Input[str], image_id: pulumi.Output[str],
    refresh_wait: command.local.Command, parent: pulumi.Resource,
) -> command.local.Command:
    """The command that, once the refresh onto `image_id` has succeeded, removes this stack's
    images older than the previous one (and their snapshots). It runs again with each new image."""
    return command.local.Command(
        child(name, "image-prune"),
        create=prune_command("prune"),
        environment={**_environment(region, stack, stack_id), "CURRENT_IMAGE_ID": image_id},
        triggers=[image_id],
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=[refresh_wait], custom_timeouts=pulumi.CustomTimeouts(create="30m"),
        ),
    )
