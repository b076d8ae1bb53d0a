"""serving/cluster_network.py: the EFA launch layout and the container's NCCL settings.

Expected layouts follow the EC2 User Guide (efa-start-nccl.html step 12; efa.html): the primary
interface on network card 0, device 0 is "EFA with ENA" (API "efa") and carries the IP; each further
network card takes one interface at device index 1, "EFA-only" (API "efa-only"); one EFA per card.
"""

from __future__ import annotations

import pytest

from serving.cluster_network import (
    EFA_HOST_MOUNT,
    EfaInterface,
    efa_device_paths,
    efa_interfaces,
    nccl_environment,
)
from sizing import gpus


def test_p5_gets_one_efa_per_network_card_32_in_all() -> None:
    layout = efa_interfaces(gpus.get("p5.48xlarge"))
    assert len(layout) == 32
    assert layout[0] == EfaInterface(network_card_index=0, device_index=0, interface_type="efa")
    assert layout[0].is_primary
    assert layout[1:] == [
        EfaInterface(network_card_index=card, device_index=1, interface_type="efa-only")
        for card in range(1, 32)
    ]
    # One interface per card, and only the primary one has an IP (is not EFA-only).
    assert len({i.network_card_index for i in layout}) == 32
    assert [i for i in layout if i.interface_type == "efa"] == [layout[0]]


def test_p4d_gets_four_cards() -> None:
    layout = efa_interfaces(gpus.get("p4d.24xlarge"))
    assert [(i.network_card_index, i.device_index, i.interface_type) for i in layout] == [
        (0, 0, "efa"), (1, 1, "efa-only"), (2, 1, "efa-only"), (3, 1, "efa-only"),
    ]


def test_a_single_card_efa_type_gets_only_the_primary() -> None:
    assert efa_interfaces(gpus.get("g5.48xlarge")) == [EfaInterface(0, 0, "efa")]


@pytest.mark.parametrize("name", ["g4dn.xlarge", "g5.xlarge", "g6e.4xlarge"])
def test_a_type_without_efa_gets_no_interfaces(name: str) -> None:
    assert efa_interfaces(gpus.get(name)) == []


def test_device_paths_one_per_efa() -> None:
    assert efa_device_paths(4) == [f"/dev/infiniband/uverbs{i}" for i in range(4)]
    assert efa_device_paths(0) == []
    with pytest.raises(ValueError, match="cannot be negative"):
        efa_device_paths(-1)


def test_nccl_over_efa_loads_the_ofi_plugin_from_the_host_mount() -> None:
    env = nccl_environment(32)
    # aws-ofi-nccl installs libnccl-net-ofi.so; NCCL opens lib<nccl-net>-<NCCL_NET_PLUGIN>.so.
    assert env["NCCL_NET_PLUGIN"] == "ofi"
    paths = env["LD_LIBRARY_PATH"].split(":")
    # The plugin (both installer layouts) and libfabric, under the mount, before the image's own.
    assert paths[:3] == [
        "/opt/amazon/ofi-nccl/lib", "/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu", "/opt/amazon/efa/lib",
    ]
    assert all(p.startswith(EFA_HOST_MOUNT + "/") for p in paths[:3])
    assert paths[3:] == ["/usr/local/nvidia/lib", "/usr/local/nvidia/lib64"]
    # Not TCP: the IB-disable switch of the TCP case is absent, and nothing names an interface.
    assert "NCCL_IB_DISABLE" not in env and "NCCL_SOCKET_IFNAME" not in env
    # Settings aws-ofi-nccl's own cheat sheet says current versions do not need.
    assert not {"FI_EFA_USE_DEVICE_RDMA", "FI_PROVIDER", "NCCL_PROTO"} & env.keys()


def test_the_image_library_path_is_kept_after_the_efa_directories() -> None:
    env = nccl_environment(1, image_ld_library_path="/usr/local/cuda/lib64")
    assert env["LD_LIBRARY_PATH"].endswith(":/opt/amazon/efa/lib:/usr/local/cuda/lib64")
    assert nccl_environment(1, image_ld_library_path="")["LD_LIBRARY_PATH"].endswith("/opt/amazon/efa/lib")


def test_without_efa_nccl_uses_sockets() -> None:
    env = nccl_environment(0)
    assert env == {"NCCL_IB_DISABLE": "1"}
    with pytest.raises(ValueError, match="cannot be negative"):
        nccl_environment(-2)


def test_the_catalog_layout_and_the_container_agree_for_every_efa_type() -> None:
    for instance in gpus.load_instances():
        layout = efa_interfaces(instance)
        assert len(layout) == instance.efa_max_interfaces
        assert len(efa_device_paths(len(layout))) == len(layout)
        assert ("NCCL_NET_PLUGIN" in nccl_environment(len(layout))) == bool(layout)
