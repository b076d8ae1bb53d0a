"""What a user is told when AWS cannot start the GPU instance."""

from components.capacity import capacity_advice

CAPACITY_ERROR = (
    "creating EC2 Instance: operation error EC2: RunInstances, https response error StatusCode: 500, "
    "api error InsufficientInstanceCapacity: We currently do not have sufficient g6.xlarge capacity "
    "in the Availability Zone you requested (us-east-1a)."
)
QUOTA_ERROR = (
    "api error VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of 0 "
    "allows for the instance bucket that the specified instance type belongs to."
)


def test_no_capacity_names_the_keys_to_change():
    advice = capacity_advice([CAPACITY_ERROR], instance_type="g6.xlarge", spot=False)
    for key in ("vllm-deploy:subnetId", "aws:region", "vllm-deploy:instanceType", "tools/size"):
        assert key in advice
    assert "spot" not in advice


def test_no_spot_capacity_suggests_on_demand():
    advice = capacity_advice([CAPACITY_ERROR], instance_type="g6.xlarge", spot=True)
    assert "spot: false" in advice
    spot_only = capacity_advice(["api error InsufficientSpotCapacity"], instance_type="g6.xlarge", spot=True)
    assert "vllm-deploy:spot to false" in spot_only


def test_quota_errors_point_at_service_quotas():
    advice = capacity_advice([QUOTA_ERROR], instance_type="g6.xlarge", spot=False)
    assert "Service Quotas" in advice and "G and VT" in advice


def test_no_capacity_for_a_cluster_says_all_nodes_must_land_together():
    advice = capacity_advice([CAPACITY_ERROR], instance_type="p4de.24xlarge", spot=False, nodes=2)
    assert "2 x p4de.24xlarge together in one cluster placement group" in advice
    assert "tools/size <model> --nodes 2 --all" in advice and "Capacity Block" in advice


def test_other_errors_get_no_advice():
    assert capacity_advice(["api error InvalidAMIID.NotFound"], instance_type="g6.xlarge", spot=False) is None


def test_a_volume_that_cannot_shrink_says_which_size_to_keep():
    error = ("modifying EC2 Volume (vol-0abc): InvalidParameterValue: New size cannot be smaller "
             "than existing size")
    advice = capacity_advice([error], instance_type="g6.xlarge", spot=False, current_volume_gb=190)
    assert "vllm-deploy:diskSizeGb to 190" in advice and "--replace" in advice


def test_the_hook_reads_the_current_volume_size_logs_the_advice_and_does_not_retry():
    from pulumi.resource_hooks import ErrorHookArgs

    from components.capacity import explain_instance_error

    logged: list[str] = []
    args = ErrorHookArgs(
        urn="urn:x", id="i-1", name="vllm-host-instance", type="aws:ec2/instance:Instance",
        old_inputs={"rootBlockDevice": {"volumeSize": 190}}, failed_operation="update",
        errors=["InvalidParameterValue: New size cannot be smaller than existing size"],
    )
    retry = explain_instance_error(args, instance_type="g6.xlarge", spot=False, log=logged.append)
    assert retry is False
    assert len(logged) == 1 and "diskSizeGb to 190" in logged[0]
    quiet: list[str] = []
    other = ErrorHookArgs(urn="urn:x", id="", name="n", type="t", errors=["InvalidAMIID.NotFound"])
    assert explain_instance_error(other, instance_type="g6.xlarge", spot=False, log=quiet.append) is False
    assert quiet == []
