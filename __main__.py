"""vllm-deploy: `pulumi up` -> a sized, provisioned, TLS-secured vLLM endpoint on AWS.

Data flows one way: stack config -> sizing plan (pure) -> resources -> stack outputs.
"""

import pulumi

from components.deployment import VllmDeployment, VllmDeploymentArgs
from components.fleet import VllmFleet, VllmFleetArgs
from components.region import offered_instance_types
from stack.preflight import preflight

# Every refusal comes here, before any resource exists (stack.preflight): a bad value, a gated
# model hfToken cannot read, a model that fits nowhere, a flag the pinned vLLM does not know, a
# proxy setting the host could never honour.
checked = preflight(offered=offered_instance_types)
settings, plan = checked.settings, checked.plan
args = dict(
    settings=settings,
    plan=plan,
    vllm_command=checked.vllm_command,
    proxy_limits=checked.proxy_limits,
    api_key=checked.secrets.api_key,
    hf_token=checked.secrets.hf_token,
    modelscope_token=checked.secrets.modelscope_token,
    aws_settings=checked.aws_settings,
)

if settings.replicas > 1:  # a fleet: an Auto Scaling group behind a load balancer (README, Replicas)
    fleet = VllmFleet("vllm", VllmFleetArgs(**args, tenant_keys=checked.secrets.tenant_keys))
    for name, value in fleet.outputs().items():
        pulumi.export(name, value)
    pulumi.export("servedModelName", settings.served_name)
    pulumi.export("instanceType", plan.instance.name)
    pulumi.export("hourlyPriceUsd", plan.hourly_price_usd)  # one replica's
    pulumi.export("sizing", plan.to_output())
else:
    deployment = VllmDeployment("vllm", VllmDeploymentArgs(**args, tenant_keys=checked.secrets.tenant_keys))
    pulumi.export("endpoint", deployment.endpoint)
    pulumi.export("apiKey", deployment.api_key)
    if deployment.api_keys is not None:  # apiKeys: tenant -> key, secret (docs/tenants.md)
        pulumi.export("apiKeys", deployment.api_keys)
    if deployment.ca_certificate is not None:  # tls=self-signed: clients verify against it
        pulumi.export("caCertificate", deployment.ca_certificate)
    pulumi.export("servedModelName", settings.served_name)
    pulumi.export("instanceType", plan.instance.name)
    pulumi.export("instanceId", deployment.instance_id)  # the head's across nodes
    pulumi.export("publicIp", deployment.public_ip)
    pulumi.export("nodes", deployment.nodes)  # each node: name, role, instanceId, privateIp, publicIp, modelVolumeId
    pulumi.export("sshCommand", deployment.ssh_command)
    if deployment.ssh_private_key is not None:
        pulumi.export("sshPrivateKey", deployment.ssh_private_key)
    if deployment.grafana_url is not None:  # monitoring: true
        pulumi.export("grafanaUrl", deployment.grafana_url)
        pulumi.export("grafanaPassword", deployment.grafana_password)
    pulumi.export("region", deployment.region)  # with instanceId: what tools/wake starts
    pulumi.export("modelVolumeId", deployment.model_volume_id)
    pulumi.export("hourlyPriceUsd", plan.hourly_price_usd)
    pulumi.export("costUsd", deployment.cost)  # running vs stopped (idleStopMinutes)
    pulumi.export("idleStopMinutes", settings.idle_stop_minutes or 0)  # 0 = off
    pulumi.export("sizing", plan.to_output())
    if deployment.benchmark is not None:  # benchmarkOnDeploy: figures of the live endpoint after `up`
        pulumi.export("benchmark", deployment.benchmark)
