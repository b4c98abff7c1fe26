"""The service model lives in gslb.config.service (config owns the model; steering reads it)."""

from ..config.service import (
    ORDERING_STEPS,
    POLICY_STEPS,
    Network,
    OnAllDown,
    Pool,
    PoolValue,
    Rule,
    Service,
    Status,
    UnknownIs,
)

__all__ = [
    "ORDERING_STEPS",
    "POLICY_STEPS",
    "Network",
    "OnAllDown",
    "Pool",
    "PoolValue",
    "Rule",
    "Service",
    "Status",
    "UnknownIs",
]
