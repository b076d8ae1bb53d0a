"""The stack configuration: one pydantic model, validated once at the boundary.

Keys are the camelCase names users write in ``Pulumi.<stack>.yaml`` under the
``vllm-deploy:`` namespace; they are the public API of this project, so they never get
renamed. StackConfig mixes the sections in config.keys_* (one concern each: the model and
serving, the host, the fleet, access, monitoring), whose field descriptions are the README's
config reference (tools/config_reference.py). Each value is checked by config.values (CIDR lists
by config.access, the image by config.images), combinations by config.rules;
``config.validation.parse()`` is the pure entry point, and ``stack.pulumi_config.load()`` feeds it
what ``pulumi.Config`` holds.

Secrets (``apiKey``, ``hfToken``, ``modelscopeToken``) are deliberately *not* fields of this model: they stay
``pulumi.Output`` secrets end to end and are read by ``stack.pulumi_config``.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import field_validator, model_validator

from config import rules
from config.access import cidr_list, within
from config.keys_access import AccessKeys
from config.keys_adapters import AdapterKeys
from config.keys_fleet import FleetKeys
from config.keys_host import HostKeys
from config.keys_model import ModelKeys
from config.keys_monitoring import MonitoringKeys
from config.keys_tenants import TenantKeys
from config.keys_tools import ToolKeys


# pydantic lists inherited fields from the last base to the first: this order keeps the config
# reference in the order a user reads it (the model first, monitoring last).
class StackConfig(MonitoringKeys, TenantKeys, AccessKeys, FleetKeys, HostKeys, AdapterKeys, ToolKeys, ModelKeys):
    """Everything a stack can say, with defaults. Field docs are the config reference."""

    # --- validators that read fields of several sections ------------------------------
    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: Any) -> Any:
        """true/false where a number belongs: pydantic would read them as 1/0 (maxModelLen: true
        would serve 1 token), so they are refused."""
        if isinstance(value, bool):
            annotation = str(cls.model_fields[info.field_name].annotation)
            if ("int" in annotation or "float" in annotation) and "bool" not in annotation:
                raise ValueError("expected a number, got a boolean; write the number itself")
        return value

    @field_validator("allowed_cidrs", "ssh_allowed_cidrs", "metrics_allowed_cidrs", "grafana_allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: Optional[list[str]], info) -> Optional[list[str]]:
        return None if value is None else cidr_list(value, info.field_name)

    @model_validator(mode="after")
    def _cross_checks(self) -> "StackConfig":
        problems = self.tool_key_problems() + self.adapter_key_problems() + self.tenant_key_problems()
        try:
            rules.check_all(self)
        except rules.CrossKeyErrors as broken:
            problems += broken.problems
        if problems:
            raise rules.CrossKeyErrors(problems)
        return self

    # --- derived -------------------------------------------------------------------
    @property
    def is_local_model(self) -> bool:
        return self.model.startswith(("/", "./", "~"))

    @property
    def grafana_cidrs(self) -> list[str]:
        """Who nginx lets open /grafana/: grafanaAllowedCidrs, else the operators' networks
        (sshAllowedCidrs, `auto` once resolved to this machine's address) where the security
        group lets them reach 443 (inside allowedCidrs); empty: nobody."""
        if self.grafana_allowed_cidrs is not None:
            return list(self.grafana_allowed_cidrs)
        return within(self.ssh_allowed_cidrs, self.allowed_cidrs)

    @property
    def served_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return self.model.rstrip("/").rsplit("/", 1)[-1] if self.is_local_model else self.model


KEYS: tuple[str, ...] = tuple(
    field.alias or name for name, field in StackConfig.model_fields.items()
)
