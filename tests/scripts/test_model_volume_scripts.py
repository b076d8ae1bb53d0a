"""The model cache volume on the host, run for real with stub system tools (test_host_scripts.Host):
mounting it by its volume id, and the download that skips a verified model and keeps earlier
ones while the volume has room."""

from __future__ import annotations

import os
import pytest

from tests.scripts.test_host_scripts import MODEL, Host, assert_failed, assert_ok

VOLUME_ID = "vol-0123456789abcdef0"


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


# --- mount_model_volume.sh -------------------------------------------------------------


class Volume:
    """An attached EBS volume as udev shows it: /dev/nvme1n1 and its by-id link."""

    def __init__(self, host: Host, volume_id: str = VOLUME_ID, device: str = "nvme1n1") -> None:
        self.host = host
        self.by_id = host.root / "dev" / "disk" / "by-id"
        self.by_id.mkdir(parents=True, exist_ok=True)
        self.device = host.root / "dev" / device
        self.device.touch()
        self.link = self.by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
        self.link.symlink_to(self.device)
        self.fstab = host.root / "etc" / "fstab"
        self.systemd = host.root / "etc" / "systemd" / "system"
        self.models = host.root / "data" / "models"

    def has_filesystem(self, fstype: str) -> None:
        (self.host.state / "fs").mkdir(exist_ok=True)
        (self.host.state / "fs" / self.device.name).write_text(fstype + "\n")

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "VLLM_DEPLOY_VOLUME_ID": VOLUME_ID,
            "VLLM_DEPLOY_MODELS_DIR": str(self.models),
            "VLLM_DEPLOY_VOLUME_GB": "20",
            "VLLM_DEPLOY_UPLOADS_DIR": str(self.models / "uploads"),
            "VLLM_DEPLOY_UPLOADS_OWNER": "ubuntu",
            "VLLM_DEPLOY_DISK_BY_ID": str(self.by_id),
            "VLLM_DEPLOY_FSTAB": str(self.fstab),
            "VLLM_DEPLOY_SYSTEMD_DIR": str(self.systemd),
            "VLLM_DEPLOY_DEVICE_TIMEOUT": "0",
            **extra,
        }

    def mount(self, **extra: str):
        return self.host.run("mount_model_volume.sh", **self.env(**extra))


@pytest.fixture
def volume(host: Host) -> Volume:
    (host.root / "etc" / "fstab").write_text("UUID=1234 / ext4 defaults 0 1\n")
    return Volume(host)


def test_an_empty_volume_is_formatted_and_mounted_by_its_volume_id_at_every_boot(volume: Volume) -> None:
    run = volume.mount()
    assert_ok(run)
    assert run.called("mkfs.ext4") == [["-q", "-m", "0", "-L", "vllm-models", str(volume.device)]]
    fstab = volume.fstab.read_text().splitlines()
    assert fstab[0] == "UUID=1234 / ext4 defaults 0 1", "other fstab entries stay"
    fields = fstab[1].split()
    # By the volume's own id (NVMe names change between boots); nofail: boot without it.
    assert fields[:3] == [str(volume.link), str(volume.models), "ext4"]
    assert "nofail" in fields[3].split(",")
    assert run.called("mount") == [[str(volume.models)]], "mounted through the fstab entry"
    assert (volume.host.state / "owners").read_text() == f"{volume.models / 'uploads'} ubuntu\n"
    dropin = volume.systemd / "docker.service.d" / "10-vllm-deploy-models.conf"
    assert "After=" in dropin.read_text() and ".mount" in dropin.read_text()
    assert run.stdout.startswith(f"VLLM_DEPLOY_MODEL_VOLUME={VOLUME_ID} size_gb=")


def test_a_volume_that_holds_a_filesystem_is_never_formatted_and_a_rerun_changes_nothing(volume: Volume) -> None:
    volume.has_filesystem("ext4")
    first = volume.mount()
    assert_ok(first)
    assert first.called("mkfs.ext4") == []
    fstab = volume.fstab.read_text()

    again = volume.mount()
    assert_ok(again)
    assert again.called("mkfs.ext4") == [] and again.called("mount") == []
    assert again.called("systemctl") == [], "nothing changed: no daemon-reload"
    assert volume.fstab.read_text() == fstab
    # A volume grown in place: its filesystem follows, online, on every run (a no-op otherwise).
    assert again.called("resize2fs") == [[str(volume.device)]]


def test_a_new_volume_replaces_the_old_volumes_fstab_entry(volume: Volume) -> None:
    old = Volume(volume.host, "vol-0fedcba9876543210", "nvme2n1")
    old.has_filesystem("ext4")
    assert_ok(volume.host.run("mount_model_volume.sh", **old.env(VLLM_DEPLOY_VOLUME_ID="vol-0fedcba9876543210")))
    (volume.host.state / "mounts").unlink()  # a new instance: nothing mounted yet

    volume.has_filesystem("ext4")
    assert_ok(volume.mount())
    lines = volume.fstab.read_text().splitlines()
    assert len(lines) == 2 and str(volume.link) in lines[1] and "vol0fedcba" not in lines[1]


def test_weights_left_on_the_root_filesystem_are_pointed_out(volume: Volume) -> None:
    old = volume.models / "Qwen--Qwen2.5-1.5B-Instruct@default"
    old.mkdir(parents=True)
    volume.has_filesystem("ext4")
    run = volume.mount()
    assert_ok(run)
    assert "holds files from before the model volume" in run.stderr and old.is_dir(), "pointed out, not deleted"


def test_an_xfs_volume_grows_with_xfs_growfs(volume: Volume) -> None:
    volume.has_filesystem("xfs")
    run = volume.mount()
    assert_ok(run)
    assert run.called("xfs_growfs") == [[str(volume.models)]] and run.called("resize2fs") == []
    assert volume.fstab.read_text().splitlines()[1].split()[2] == "xfs"


def test_a_volume_that_is_not_attached_fails_naming_it(volume: Volume) -> None:
    volume.link.unlink()
    run = volume.mount()
    assert_failed(run, f"the model volume {VOLUME_ID} is not attached", "describe-volumes")
    assert run.called("mkfs.ext4") == [] and run.called("mount") == []


def test_a_device_with_a_partition_table_is_not_formatted(volume: Volume) -> None:
    volume.has_filesystem("gpt")
    run = volume.mount()
    assert_failed(run, "partition table", "refusing to format")
    assert run.called("mkfs.ext4") == []


def test_a_models_dir_mounted_from_another_device_is_reported(volume: Volume) -> None:
    volume.has_filesystem("ext4")
    volume.models.mkdir(parents=True)
    (volume.host.state / "mounts").write_text(f"{volume.models} /dev/nvme9n1\n")
    run = volume.mount()
    assert_failed(run, "already a mount of /dev/nvme9n1", "umount")


@pytest.mark.parametrize(
    ("override", "message"),
    [({"VLLM_DEPLOY_VOLUME_ID": "vol-xyz"}, "must be an EBS volume id"),
     ({"VLLM_DEPLOY_MODELS_DIR": "data/models"}, "must be an absolute directory"),
     ({"VLLM_DEPLOY_UPLOADS_DIR": "/tmp/elsewhere"}, "is not inside")],
)
def test_mount_rejects_bad_input(volume: Volume, override: dict[str, str], message: str) -> None:
    volume.has_filesystem("ext4")
    assert_failed(volume.mount(**override), message)


# --- download_model.sh: skip, verify, keep ---------------------------------------------

SHARD_BYTES = 100_000
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
# What one published model takes on disk (two shards plus small files and directories).
MODEL_BYTES = 2 * SHARD_BYTES


def publish(host: Host, revision: str) -> None:
    repo = host.state / "remote_repo" / revision
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"]}')
    weight_map = ", ".join(f'"layer.{i}.weight": "{s}"' for i, s in enumerate(SHARDS))
    (repo / "model.safetensors.index.json").write_text('{"weight_map": {' + weight_map + "}}")
    for shard in SHARDS:
        (repo / shard).write_bytes(b"\1" * SHARD_BYTES)


def download(host: Host, revision: str, **extra: str):
    return host.run("download_model.sh", **{
        "VLLM_DEPLOY_MODEL": MODEL,
        "VLLM_DEPLOY_MODEL_REVISION": revision,
        "VLLM_DEPLOY_MODELS_DIR": str(host.models),
        "VLLM_DEPLOY_MODEL_DIR": str(host.models / f"qwen@{revision}"),
        "VLLM_DEPLOY_MODEL_BYTES": str(MODEL_BYTES),
        **extra,
    })


def on_disk(host: Host) -> set[str]:
    return {p.name for p in host.models.iterdir() if (p / ".vllm-deploy-download").exists()}


@pytest.fixture
def hub(host: Host) -> Host:
    for revision in ("a", "b", "c"):
        publish(host, revision)
    return host


def test_a_missing_model_is_fetched_and_a_present_verified_one_is_not(hub: Host) -> None:
    fetched = download(hub, "a")
    assert_ok(fetched)
    assert len(fetched.called("hf")) == 1
    skipped = download(hub, "a")
    assert_ok(skipped)
    assert skipped.called("hf") == [] and skipped.called("pip") == []
    assert "already in" in skipped.stderr and skipped.stdout == fetched.stdout


def test_a_model_that_no_longer_matches_what_was_downloaded_is_fetched_again(hub: Host) -> None:
    assert_ok(download(hub, "a"))
    shard = hub.models / "qwen@a" / SHARDS[1]
    shard.write_bytes(b"\1" * (SHARD_BYTES // 2))  # truncated on disk since: still non-empty
    again = download(hub, "a")
    assert_ok(again)
    assert len(again.called("hf")) == 1
    assert shard.stat().st_size == SHARD_BYTES


def test_a_model_from_before_the_manifest_is_checked_by_the_downloader(hub: Host) -> None:
    assert_ok(download(hub, "a"))
    (hub.models / "qwen@a" / ".vllm-deploy-manifest").unlink()
    again = download(hub, "a")
    assert_ok(again)
    assert len(again.called("hf")) == 1 and (hub.models / "qwen@a" / ".vllm-deploy-manifest").is_file()


def test_a_model_change_keeps_the_previous_model_when_the_volume_has_room(hub: Host) -> None:
    (hub.state / "volume_bytes").write_text(str(10 * MODEL_BYTES))
    assert_ok(download(hub, "a"))
    switched = download(hub, "b")
    assert_ok(switched)
    assert on_disk(hub) == {"qwen@a", "qwen@b"}
    assert "keeping the models downloaded before" in switched.stderr
    back = download(hub, "a")
    assert_ok(back)
    assert back.called("hf") == [], "switching back to a kept model downloads nothing"


def test_without_room_the_least_recently_used_model_goes_and_only_as_many_as_needed(hub: Host) -> None:
    # Room for two models and a half: a third needs one of them gone.
    (hub.state / "volume_bytes").write_text(str(int(2.6 * MODEL_BYTES)))
    assert_ok(download(hub, "a"))
    assert_ok(download(hub, "b"))
    assert on_disk(hub) == {"qwen@a", "qwen@b"}
    # "a" was served again more recently than "b".
    os.utime(hub.models / "qwen@b" / ".vllm-deploy-download", (1_700_000_000, 1_700_000_000))
    os.utime(hub.models / "qwen@a" / ".vllm-deploy-download", (1_700_000_100, 1_700_000_100))
    run = download(hub, "c")
    assert_ok(run)
    assert on_disk(hub) == {"qwen@a", "qwen@c"}
    assert f"removing {hub.models / 'qwen@b'} (least recently used)" in run.stderr


def test_a_model_that_does_not_fit_even_alone_is_still_tried_with_a_warning(hub: Host) -> None:
    assert_ok(download(hub, "a"))
    (hub.state / "volume_bytes").write_text(str(MODEL_BYTES // 2))
    run = download(hub, "b")
    assert_ok(run)  # the estimate may be high; the download decides
    assert on_disk(hub) == {"qwen@b"}
    assert "may run out of space (raise modelVolumeSizeGb)" in run.stderr


def test_without_an_expected_size_every_earlier_model_goes(hub: Host) -> None:
    assert_ok(download(hub, "a"))
    assert_ok(download(hub, "b", VLLM_DEPLOY_MODEL_BYTES=""))
    assert on_disk(hub) == {"qwen@b"}


def test_unrelated_directories_on_the_volume_are_never_removed(hub: Host) -> None:
    (hub.state / "volume_bytes").write_text(str(MODEL_BYTES // 2))
    uploads = hub.models / "uploads" / "my-finetune"
    uploads.mkdir(parents=True)
    (uploads / "config.json").write_text("{}")
    assert_ok(download(hub, "a"))
    assert uploads.is_dir()


def test_the_room_is_measured_on_the_models_volume(hub: Host) -> None:
    assert_ok(download(hub, "a"))
    run = download(hub, "b")
    assert_ok(run)
    assert [c[-1] for c in run.called("df") if "--output=avail" in c] == [str(hub.models)]


# --- download_model.sh: LoRA adapters (VLLM_DEPLOY_MODEL_KIND=adapter) ----------------------


def publish_adapter(host: Host, revision: str, weights: str = "adapter_model.safetensors") -> None:
    repo = host.state / "remote_repo" / revision
    repo.mkdir(parents=True)
    (repo / "adapter_config.json").write_text('{"r": 16, "peft_type": "LORA"}')
    (repo / weights).write_bytes(b"\1" * 1000)


def download_adapter(host: Host, revision: str, **extra: str):
    return host.run("download_model.sh", **{
        "VLLM_DEPLOY_MODEL": "acme/sql-lora",
        "VLLM_DEPLOY_MODEL_REVISION": revision,
        "VLLM_DEPLOY_MODEL_KIND": "adapter",
        "VLLM_DEPLOY_MODELS_DIR": str(host.models),
        "VLLM_DEPLOY_MODEL_DIR": str(host.models / f"lora@{revision}"),
        "VLLM_DEPLOY_KEEP_OTHER_MODELS": "1",
        **extra,
    })


def test_an_adapter_is_verified_as_an_adapter_and_keeps_the_base_model(hub: Host) -> None:
    """An adapter has no config.json: it is checked for adapter_config.json and its weights,
    downloaded once, and the base model beside it stays (as the add-on steps run it)."""
    assert_ok(download(hub, "a"))
    publish_adapter(hub, "lora1")
    fetched = download_adapter(hub, "lora1")
    assert_ok(fetched)
    assert (hub.models / "lora@lora1" / "adapter_config.json").is_file()
    assert on_disk(hub) == {"qwen@a", "lora@lora1"}
    again = download_adapter(hub, "lora1")
    assert_ok(again)
    assert again.called("hf") == [] and "already in" in again.stderr


def test_an_adapter_repository_without_weights_fails_naming_them(hub: Host) -> None:
    publish_adapter(hub, "broken", weights="README.md")
    failed = download_adapter(hub, "broken")
    assert failed.returncode != 0
    assert "no adapter_model.safetensors" in failed.stderr
    assert not (hub.models / "lora@broken" / ".vllm-deploy-download").exists()


def test_a_model_repository_downloaded_as_an_adapter_is_refused(hub: Host) -> None:
    failed = download_adapter(hub, "a")  # a base model's files: no adapter_config.json
    assert failed.returncode != 0 and "adapter_config.json is missing" in failed.stderr


def test_an_unknown_kind_is_refused(hub: Host) -> None:
    failed = download_adapter(hub, "a", VLLM_DEPLOY_MODEL_KIND="lora")
    assert failed.returncode != 0 and "VLLM_DEPLOY_MODEL_KIND must be model or adapter" in failed.stderr
