"""Stack keys of one concern: a fleet of identical hosts behind one load balancer (README, Replicas).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from config import values
from config.constants import DEFAULT_DRAIN_SECONDS, MAX_REPLICAS
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
