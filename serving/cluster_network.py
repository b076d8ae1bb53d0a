"""What a cluster node needs for NCCL across nodes: EFA interfaces at launch, container settings.

Pure facts, no Pulumi. The components wire them: the launch layout (``efa_interfaces``) becomes
``aws.ec2.NetworkInterface`` resources (``interface_type`` "efa" / "efa-only"; pulumi_aws 7.51
passes the string to the Terraform provider, which accepts "efa-only" since v5.74,
hashicorp/terraform-provider-aws pull request #39882) attached at the given network card and device
index; the container settings (``nccl_environment``, ``efa_device_paths``, ``EFA_HOST_MOUNT``,
``EFA_CONTAINER_ULIMITS``) go on every node's vLLM/Ray container. The host side (EFA userspace
present, the devices counted) is components/scripts/check_efa.sh.

Sources (AWS EC2 User Guide, read 2026-11-30 from stored copies; sizing/catalog/SOURCES.md "EFA"):

* efa.html "EFA limitations": instance types with multiple network cards take one EFA per network
  card; the others one EFA per instance. "Differences between ENA, EFA, and EFA-only": an EFA-only
  interface has no IP address and cannot be the primary network interface; API names
  ``interface`` (ENA), ``efa`` (EFA with ENA), ``efa-only``.
* efa-start-nccl.html step 12 ("Launch EFA and NCCL-enabled instances into a cluster placement
  group"): network interface 1 = network card index 0, device index 0, "EFA with ENA"; for a
  multi-card type each further interface on the next unused network card index, device index 1,
  "EFA with ENA" or "EFA-only". efa-acc-inst-types.html gives the same layout.
* "Amazon EC2 announces EFA updates" (2024-10-28): EFA-only interfaces are available on all EFA
  supported instance types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sizing.gpus import GpuInstance

InterfaceType = Literal["efa", "efa-only"]

# The EC2 API's names for the two interface types that carry an EFA device (efa.html).
EFA_WITH_ENA: InterfaceType = "efa"
EFA_ONLY: InterfaceType = "efa-only"

# Where AWS's EFA installer (and the DLAMIs, which run it) puts the EFA userspace on the host:
# libfabric in /opt/amazon/efa, the aws-ofi-nccl plugin in /opt/amazon/ofi-nccl, Open MPI in
# /opt/amazon/openmpi (efa-start-nccl.html, step 5). Mounted read-only into the container.
EFA_HOST_MOUNT = "/opt/amazon"

# The container's library path for NCCL over EFA, in order:
# * /opt/amazon/ofi-nccl/lib: the aws-ofi-nccl plugin (EFA installer 1.44.0 and later put
#   libnccl-net-ofi.so here; earlier ones in lib/x86_64-linux-gnu on Debian/Ubuntu, kept second so
#   either installer works). x86_64 only, as the deployer (sizing.gpus.SUPPORTED_ARCHES).
# * /opt/amazon/efa/lib: libfabric on Ubuntu (efa-start-nccl.html step 7: "Ubuntu 24.04 and Ubuntu
#   22.04: export LD_LIBRARY_PATH=/opt/amazon/efa/lib:$LD_LIBRARY_PATH"; Amazon Linux uses lib64).
EFA_LIBRARY_DIRS = (
    "/opt/amazon/ofi-nccl/lib",
    "/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu",
    "/opt/amazon/efa/lib",
)

# What the CUDA base images set LD_LIBRARY_PATH to (nvidia/cuda images: ENV
# LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64). Setting LD_LIBRARY_PATH on
# `docker run` replaces the image's value, so nccl_environment appends this by default. Not
# re-checked against vllm/vllm-openai:v0.33.0: pass the image's own value when it differs.
CUDA_IMAGE_LD_LIBRARY_PATH = "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"

# aws-ofi-nccl always installs libnccl-net-ofi.so; NCCL loads it with NCCL_NET_PLUGIN=ofi
# (github.com/aws/aws-ofi-nccl src/Makefile.am, HEAD 2daf7d30, 2026-08-21: "we always install
# lib{n,r}ccl-net-ofi.so. To use the default shared library, either
# NCCL_NET_PLUGIN=lib{n,r}ccl-net-ofi.so or NCCL_NET_PLUGIN=ofi must be set"). The unsuffixed
# libnccl-net.so is optional (--disable-nccl-net-library), so the suffix is named explicitly.
NCCL_NET_PLUGIN = "ofi"

# Without EFA there is no InfiniBand/RoCE device on an EC2 instance, so NCCL's IB transport finds
# nothing and NCCL uses its socket transport; NCCL_IB_DISABLE=1 says so instead of letting NCCL
# probe (NCCL user guide, environment variables: NCCL_IB_DISABLE "disables the IB/RoCE transport
# ... NCCL will fallback to using IP sockets"). With EFA it is left unset: EFA is reached through
# the net plugin, not NCCL's IB transport.
NCCL_IB_DISABLE_WITHOUT_EFA = "1"

# The EFA installer raises the locked-memory limit to unlimited for users on the host
# (/etc/security/limits.d/efa.conf; its --skip-limit-conf option skips that) because libfabric
# registers (pins) communication buffers. A container does not read limits.d: Docker's default
# memlock limit applies unless `--ulimit memlock=-1:-1` is given. Values: soft, hard (-1 =
# unlimited).
EFA_CONTAINER_ULIMITS = {"memlock": (-1, -1)}


@dataclass(frozen=True)
class EfaInterface:
    """One EFA network interface to attach at launch.

    ``network_card_index`` and ``device_index`` are EC2's (RunInstances NetworkInterfaces,
    aws.ec2.NetworkInterfaceAttachment / aws.ec2.Instance network_interfaces); ``interface_type``
    is the EC2 API value, "efa" (EFA with ENA: carries the instance's private IP) or "efa-only"
    (no IP address; cannot be the primary interface).
    """

    network_card_index: int
    device_index: int
    interface_type: InterfaceType

    @property
    def is_primary(self) -> bool:
        """The instance's primary network interface (card 0, device 0), which carries its IP."""
        return self.network_card_index == 0 and self.device_index == 0


def efa_interfaces(instance: GpuInstance) -> list[EfaInterface]:
    """The EFA interfaces to attach when launching ``instance`` as a cluster node.

    One per network card, ``instance.efa_max_interfaces`` in all (EC2 MaximumEfaInterfaces; at
    most one EFA per network card, efa.html "EFA limitations"):

    * card 0, device 0: the primary interface, type "efa" (EFA with ENA), carrying the private IP
      the nodes reach each other on;
    * cards 1 .. N-1, device 1: type "efa-only" (no IP address, so a node uses one private IP
      however many cards it has, and Linux sees no second routed interface).

    Returns [] for a type without EFA (``efa_max_interfaces == 0``): it launches with its usual
    single ENA interface and NCCL uses TCP sockets.

    The layout assumes the EFA-capable cards are 0 .. N-1, which holds where the type has as many
    network cards as EFAs (p4d/p4de 4, p5/p5e 32, g6e.48xlarge 4, every one-card type). Public
    notes (not AWS's) say p6-b300.48xlarge has 17 network cards with 16 EFA and p6e-gb200 puts
    EFA on odd cards only; for such a type the layout is unverified (see the module notes in
    sizing/catalog/SOURCES.md "EFA").
    """
    count = instance.efa_max_interfaces
    if count < 0:
        raise ValueError(f"{instance.name}: efa_max_interfaces is {count}; it cannot be negative")
    if count == 0:
        return []
    primary = EfaInterface(network_card_index=0, device_index=0, interface_type=EFA_WITH_ENA)
    others = [
        EfaInterface(network_card_index=card, device_index=1, interface_type=EFA_ONLY)
        for card in range(1, count)
    ]
    return [primary, *others]


def efa_device_paths(efa_interfaces: int) -> list[str]:
    """The host devices a container needs to use ``efa_interfaces`` EFA devices.

    Each EFA device (of an "efa" or "efa-only" interface) appears to userspace as one RDMA verbs
    device, /dev/infiniband/uverbs0 .. uverbs<N-1>, which the container needs passed through
    (AWS Batch user guide, "Elastic Fabric Adapter": a ``devices`` entry with hostPath
    /dev/infiniband/uverbs0 for an EFA; one uverbs file per EFA device is inferred from that).
    components/scripts/check_efa.sh checks these exist before the container starts.

    Raises ValueError for a negative count.
    """
    if efa_interfaces < 0:
        raise ValueError(f"efa_interfaces is {efa_interfaces}; it cannot be negative")
    return [f"/dev/infiniband/uverbs{index}" for index in range(efa_interfaces)]


def nccl_environment(
    efa_interfaces: int, *, image_ld_library_path: str = CUDA_IMAGE_LD_LIBRARY_PATH
) -> dict[str, str]:
    """The environment the vLLM/Ray container needs for NCCL between nodes.

    ``efa_interfaces``: how many EFA devices the node has (``len(efa_interfaces(instance))``).
    ``image_ld_library_path``: the image's own LD_LIBRARY_PATH, appended after the EFA library
    directories (a ``docker run -e`` value replaces the image's).

    With EFA (> 0), NCCL reaches EFA through AWS's aws-ofi-nccl plugin from the host's
    EFA_HOST_MOUNT (mounted read-only at the same path):

    * NCCL_NET_PLUGIN=ofi: load libnccl-net-ofi.so (aws-ofi-nccl src/Makefile.am, above);
    * LD_LIBRARY_PATH: the plugin and libfabric directories (EFA_LIBRARY_DIRS), then the image's.

    Left out on purpose, per aws-ofi-nccl doc/efa-env-var.md (HEAD 2daf7d30): FI_PROVIDER=efa
    ("Use for aws-ofi-nccl<=1.5.0"), FI_EFA_USE_DEVICE_RDMA=1 ("Do not set for libfabric>=1.18.0
    and aws-ofi-nccl>=1.7.0"; the plugin turns RDMA on where the device has it), NCCL_PROTO=simple
    (old plugin versions only); current EFA installers ship libfabric 2.x and aws-ofi-nccl 1.2x
    (EC2 "EFA release notes": 1.51.0, 2026-10-22, libfabric 2.7.0, aws-ofi-nccl 1.22.0).

    Without EFA (0): NCCL_IB_DISABLE=1, NCCL's TCP socket transport. NCCL_SOCKET_IFNAME (which
    host interface NCCL's sockets and bootstrap use) is not set here in either case: the host
    script that starts the container finds the interface name.

    Raises ValueError for a negative count.
    """
    if efa_interfaces < 0:
        raise ValueError(f"efa_interfaces is {efa_interfaces}; it cannot be negative")
    if efa_interfaces == 0:
        return {"NCCL_IB_DISABLE": NCCL_IB_DISABLE_WITHOUT_EFA}
    library_path = ":".join(
        part for part in (*EFA_LIBRARY_DIRS, image_ld_library_path) if part
    )
    return {"NCCL_NET_PLUGIN": NCCL_NET_PLUGIN, "LD_LIBRARY_PATH": library_path}
