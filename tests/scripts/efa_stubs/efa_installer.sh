#!/usr/bin/env bash
# AWS's efa_installer.sh for the EFA tests (packed into the test's installer tarball): installs
# libfabric's fi_info, the aws-ofi-nccl plugin and the efa kernel module, and loads the module.
# shellcheck source-path=SCRIPTDIR/../../host_stubs source=_lib.sh
source "$STUB_SRC/_lib.sh"
stub_maybe_fail efa_installer
prefix=$VLLM_DEPLOY_EFA_PREFIX
mkdir -p "$prefix/efa/bin" "$prefix/ofi-nccl/lib"
ln -sf "$STUB_EFA/fi_info" "$prefix/efa/bin/fi_info"
touch "$prefix/ofi-nccl/lib/libnccl-net-ofi.so" "$STUB_STATE/efa_module_installed"
[[ -f "$STUB_STATE/efa_needs_reboot" ]] || "$STUB_EFA/modprobe" efa
