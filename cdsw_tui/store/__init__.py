"""The store: SQLModel tables over one SQLite file."""

from cdsw_tui.store.db import SCHEMA_VERSION, Store
from cdsw_tui.store.tables import (
    BUILD_FINAL,
    DEPLOYMENT_ACTIVE,
    ApiKey,
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    EnvVar,
    Meta,
    Model,
    Project,
    Replica,
    ReplicaStatus,
    TrackedMetric,
    pk,
    utcnow,
)

__all__ = [
    "ApiKey",
    "BUILD_FINAL",
    "DEPLOYMENT_ACTIVE",
    "SCHEMA_VERSION",
    "Build",
    "BuildStatus",
    "Deployment",
    "DeploymentStatus",
    "EnvVar",
    "Meta",
    "Model",
    "Project",
    "Replica",
    "ReplicaStatus",
    "TrackedMetric",
    "Store",
    "pk",
    "utcnow",
]
