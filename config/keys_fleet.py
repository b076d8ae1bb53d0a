"""Stack keys of one concern: a fleet of identical hosts behind one load balancer (README, Replicas).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BeforeValidator, Field

from config import values
from config.constants import DEFAULT_DRAIN_SECONDS, DEFAULT_SCALE_ON_WAITING_REQUESTS, MAX_REPLICAS
from config.keys_base import Keys


class FleetKeys(Keys):
    """Replicas: a fleet of identical hosts behind one load balancer (README, Replicas)."""

    replicas: Annotated[int, BeforeValidator(values.replicas)] = Field(1, description=f"Identical hosts behind one load balancer: 1 (one host) or 2 to "
                           f"{MAX_REPLICAS} (an Auto Scaling group from one baked image; README, Replicas).")
    drain_seconds: Annotated[int, BeforeValidator(values.drain_seconds)] = Field(
        DEFAULT_DRAIN_SECONDS,
        description="With replicas: how long a retiring replica may finish its requests in flight (the "
        "target group's deregistration delay); the longest stream an update should not cut.",
    )
    # --- scaling, warm pool, spot (issue 26; README, Scaling) ------------------------------
    max_replicas: Optional[int] = Field(
        None, ge=1, le=MAX_REPLICAS,
        description="With replicas >= 2: above replicas, the fleet scales itself between replicas (the "
        "minimum) and this, on vLLM's waiting requests per replica (README, Scaling). Unset: a fixed fleet.",
    )
    scale_on_waiting_requests: float = Field(
        DEFAULT_SCALE_ON_WAITING_REQUESTS, gt=0, le=1000,
        description="With maxReplicas: the target of the scaling policy, vLLM's requests waiting for a "
        "batch slot (vllm:num_requests_waiting), averaged over the replicas; more adds replicas.",
    )
    warm_replicas: int = Field(
        0, ge=0, le=MAX_REPLICAS,
        description="With replicas >= 2: instances kept booted once and stopped in a warm pool (only "
        "their volumes bill), so a scale-out is a start and a model load. Not with spot.",
    )
    on_demand_replicas: int = Field(
        1, ge=0, le=MAX_REPLICAS,
        description="With replicas >= 2 and spot: the on-demand base of the fleet; every replica above "
        "it is spot, over each instance type that runs the same vLLM argv.",
    )
