"""Runs where `pulumi up` / `pulumi destroy` run: removes a fleet's baked images that nothing
needs any more, and their EBS snapshots (deregistering an image leaves its snapshots, billed:
hashicorp/packer#3320; fleet-pitfalls P9, P11).

This stack's images are the account's own AMIs (Owners=self) tagged project=<PROJECT>,
stack=<STACK> and carrying the tag vllm-deploy-image-digest (components.fleet_image sets all
three). Two modes:

    prune    after an instance refresh onto CURRENT_IMAGE_ID has succeeded: keeps that image
             and the newest one made before it (the previous image, what a rollback or a
             manual revert of the template launches), and anything newer than the current one
             (a bake this run does not know about); deregisters every older image and deletes
             its snapshots.
    destroy  on `pulumi destroy` (after the group and its launch template are gone):
             deregisters every image of this stack and deletes its snapshots.

Exit 0 when done (nothing to remove included), 1 when an AWS call failed (the message names
the image and the call), and prints what it removed. AWS credentials: the default chain of
where Pulumi runs (as components/local/wait_for_refresh.py).

Environment: PROJECT, STACK, AWS_REGION; CURRENT_IMAGE_ID (prune).
"""

from __future__ import annotations

import os
import sys
from typing import Any

DIGEST_TAG = "vllm-deploy-image-digest"
# A random id made once per stack (components.fleet_image): two stacks of the same project and
# name in one account (two people's `dev`) never touch each other's images.
STACK_ID_TAG = "vllm-deploy-stack-id"


def stack_images(client: Any, project: str, stack: str, stack_id: str) -> list[dict[str, Any]]:
    """This stack's baked images, oldest first (by CreationDate, then id)."""
    images = client.describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "tag:project", "Values": [project]},
            {"Name": "tag:stack", "Values": [stack]},
            {"Name": f"tag:{STACK_ID_TAG}", "Values": [stack_id]},
            {"Name": "tag-key", "Values": [DIGEST_TAG]},
        ],
    )["Images"]
    return sorted(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))


def images_to_remove(images: list[dict[str, Any]], current: str) -> list[dict[str, Any]]:
    """Of `images` (oldest first), those older than the one before `current`. Nothing when
    `current` is not among them (this run cannot tell what is old: it removes nothing)."""
    ids = [i["ImageId"] for i in images]
    if current not in ids:
        return []
    keep_from = max(0, ids.index(current) - 1)  # the previous image stays
    return images[:keep_from]


def remove(client: Any, image: dict[str, Any]) -> None:
    """Deregister `image` and delete the EBS snapshots it was made of, in one call
    (DeregisterImage's DeleteAssociatedSnapshots: AWS keeps a snapshot another image also uses)."""
    snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
    client.deregister_image(ImageId=image["ImageId"], DeleteAssociatedSnapshots=True)
    print(f"removed image {image['ImageId']} ({image.get('Name', '')}) and snapshots {', '.join(snapshots) or 'none'}",
          flush=True)


def run(client: Any, mode: str, project: str, stack: str, current: str = "", stack_id: str = "") -> int:
    if mode not in ("prune", "destroy"):
        print(f"prune_images: unknown mode {mode!r} (prune or destroy)", file=sys.stderr, flush=True)
        return 1
    if not stack_id:
        print(f"{stack}: no STACK_ID, so this stack's images cannot be told from another's of the same "
              "name; nothing removed", file=sys.stderr, flush=True)
        return 1
    images = stack_images(client, project, stack, stack_id)
    doomed = images if mode == "destroy" else images_to_remove(images, current)
    if mode == "prune" and current not in {i["ImageId"] for i in images}:
        print(f"{stack}: the current image {current} is not among this stack's images; nothing removed", flush=True)
    for image in doomed:
        try:
            remove(client, image)
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError and connection errors alike
            print(f"{stack}: could not remove image {image['ImageId']}: {exc}; remove it by hand: "
                  f"aws ec2 deregister-image --image-id {image['ImageId']} --delete-associated-snapshots "
                  "(README, Replicas)", file=sys.stderr, flush=True)
            return 1
    kept = [i["ImageId"] for i in images if i not in doomed]
    print(f"{stack}: {len(doomed)} image(s) removed; kept {', '.join(kept) or 'none'}", flush=True)
    return 0


def main() -> int:
    try:
        import boto3
    except ImportError:
        print("prune_images: boto3 is not installed for this Python "
              f"({sys.executable}); run Pulumi from the project with its .venv "
              "(python3 -m venv .venv && .venv/bin/pip install --require-hashes -r requirements.lock)",
              file=sys.stderr, flush=True)
        return 1
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    client = boto3.client("ec2", region_name=os.environ["AWS_REGION"])
    return run(client, mode, os.environ["PROJECT"], os.environ["STACK"], os.environ.get("CURRENT_IMAGE_ID", ""),
               os.environ.get("STACK_ID", ""))


if __name__ == "__main__":
    sys.exit(main())
