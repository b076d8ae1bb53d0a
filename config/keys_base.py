"""The one pydantic configuration every section of the stack configuration shares.

Stack keys are the camelCase names users write in ``Pulumi.<stack>.yaml`` under the
``vllm-deploy:`` namespace (alias_generator=to_camel); unknown keys are refused (extra="forbid");
a validated configuration never changes (frozen).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Keys(BaseModel):
    """Base of config.keys_* sections and of config.settings.StackConfig."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )
