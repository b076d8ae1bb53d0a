"""FleetMonitoring: a fleet's metrics in CloudWatch (monitoring on). The replicas' log group
(the CloudWatch agent's EMF events, serving/monitoring/cloudwatch.py), made before any replica
so the instance profile can be scoped to it; then, once the group and the load balancer exist,
the alarms that stand for the single host's Prometheus alerts and a dashboard.

The alarms have no actions: like the single host's alerts (shown in Grafana), they show in the
CloudWatch console and on the dashboard; subscribe an SNS topic to them to be paged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import child, component_type
from serving.monitoring import cloudwatch

# CloudWatch Logs PutRetentionPolicy: retentionInDays is one of these (AWS API reference).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)


def log_retention_days(days: int) -> int:
    """The shortest retention CloudWatch Logs accepts that keeps `days` days (monitoringRetentionDays)."""
    return next(d for d in LOG_RETENTION_DAYS if d >= days)


@dataclass
class FleetMonitoringArgs:
    stack: str
    region: str
    retention_days: int
    """monitoringRetentionDays: how long the EMF log events are kept (metrics keep CloudWatch's own 15 months)."""


class FleetMonitoring(pulumi.ComponentResource):
    log_group: aws.cloudwatch.LogGroup

    def __init__(self, name: str, args: FleetMonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("FleetMonitoring"), name, None, opts)
        self._name, self._args = name, args
        self.log_group = aws.cloudwatch.LogGroup(
            child(name, "logs"),
            name=cloudwatch.log_group_name(args.stack),
            retention_in_days=log_retention_days(args.retention_days),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def watch(
        self, *, group_name: pulumi.Output[str], load_balancer_suffix: pulumi.Output[str],
        target_group_suffix: pulumi.Output[str], replicas: int, requests_waiting: int,
    ) -> None:
        """The alarms and the dashboard on the group's metrics (made after the group: its name
        output) and the load balancer's; then the component's outputs."""
        for alarm in cloudwatch.alarms(replicas=replicas, requests_waiting=requests_waiting):
            if alarm.scope == "group":
                dimensions = group_name.apply(lambda g: {cloudwatch.GROUP_DIMENSION: g})
            else:
                dimensions = pulumi.Output.all(target_group_suffix, load_balancer_suffix).apply(
                    lambda v: {"TargetGroup": v[0], "LoadBalancer": v[1]}
                )
            aws.cloudwatch.MetricAlarm(
                child(self._name, alarm.name),
                name=group_name.apply(lambda g, a=alarm: f"{g}-{a.name}"),
                namespace=alarm.namespace,
                metric_name=alarm.metric,
                dimensions=dimensions,
                statistic=alarm.statistic,
                period=alarm.period_s,
                evaluation_periods=alarm.periods,
                datapoints_to_alarm=alarm.periods,
                comparison_operator=alarm.comparison,
                threshold=alarm.threshold,
                treat_missing_data=alarm.treat_missing_data,
                alarm_description=alarm.description,
                opts=pulumi.ResourceOptions(parent=self),
            )
        body = pulumi.Output.all(group_name, load_balancer_suffix, target_group_suffix).apply(
            lambda v: cloudwatch.dashboard_body(
                region=self._args.region, group_name=v[0], load_balancer=v[1], target_group=v[2]
            )
        )
        dashboard = aws.cloudwatch.Dashboard(
            child(self._name, "dashboard"),
            dashboard_name=f"vllm-deploy-{self._args.stack}-replicas",
            dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = pulumi.Output.concat(
            "https://", self._args.region, ".console.aws.amazon.com/cloudwatch/home?region=", self._args.region,
            "#dashboards/dashboard/", dashboard.dashboard_name,
        )
        self.register_outputs({"logGroup": self.log_group.name, "dashboardUrl": self.dashboard_url})
