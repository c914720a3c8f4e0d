"""The store's tables: desired state (what faces ask for) and observed state (what the controller saw)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def pk(row: SQLModel) -> int:
    """A stored row's id: every row read from the store has one (a row not yet added
    has none, and asking for it is a bug)."""
    ident = getattr(row, "id", None)
    if ident is None:
        raise ValueError(f"this {type(row).__name__} has not been stored yet")
    return int(ident)


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    runtime: str = "local"
    engine: str = ""
    placement: str = ""  # scheduler constraints, one a line (e.g. node.labels.gpu==true)
    python: str = ""  # the interpreter of the local runtime's environments ("": the controller's)
    egress: bool = False  # replicas may open connections out (builds always may, for pip)
    template: str = ""  # the template its folder was copied from ("": the user's own folder)
    created_at: datetime = Field(default_factory=utcnow)


class Model(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    name: str
    slug: str
    description: str = ""
    file: str
    function: str
    kernel: str = "python3"
    example_input: str = ""
    example_output: str = ""
    access_key: str = Field(unique=True, index=True)
    auth_enabled: bool = False
    replicas: int = 1
    cpu: float = 1.0
    memory: int = 2048
    gpu: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BuildStatus(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    BUILT = "built"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEDOUT = "timedout"


BUILD_FINAL = (BuildStatus.BUILT, BuildStatus.FAILED, BuildStatus.CANCELLED, BuildStatus.TIMEDOUT)


class Build(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True, ondelete="CASCADE")
    number: int
    status: str = Field(default="queued", index=True)
    reason: str = ""
    comment: str = ""
    snapshot: str = ""
    tree: str = ""
    file: str
    function: str
    kernel: str
    runtime: str
    engine: str = ""
    artifact: str = ""
    image_id: str = ""
    env_path: str = ""
    dep_key: str = ""
    dep_reused: bool = False
    warnings: str = Field(default="", sa_column=Column(Text, default=""))
    cancel_requested: bool = False
    clean: bool = False
    pid: int | None = None
    deploy_request: str = Field(default="", sa_column=Column(Text, default=""))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


DEPLOYMENT_ACTIVE = (
    DeploymentStatus.PENDING,
    DeploymentStatus.DEPLOYING,
    DeploymentStatus.DEPLOYED,
    DeploymentStatus.STOPPING,
)


class ReplicaStatus(StrEnum):
    """A replica's state as the controller keeps it (Ray Serve's replica states)."""

    STARTING = "starting"  # started, not yet answering its health probe
    RUNNING = "running"  # in the pool, answering calls
    DRAINING = "draining"  # out of the pool, finishing its call in flight
    RESTARTING = "restarting"  # died or failed; a new one starts after a back-off
    STOPPING = "stopping"  # being stopped by the runtime
    STOPPED = "stopped"
    FAILED = "failed"  # did not start during a rollout


class Deployment(SQLModel, table=True):
    """IDs come from AUTOINCREMENT semantics: global and never reused.

    The partial unique index lets one rollout (pending or deploying) exist per model at a
    time, so of two deploy requests at once the database itself picks the winner.
    """

    __table_args__ = (
        Index(
            "one_rollout_per_model",
            "model_id",
            unique=True,
            sqlite_where=text("status IN ('pending', 'deploying')"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True, ondelete="CASCADE")
    build_id: int = Field(foreign_key="build.id", ondelete="CASCADE")
    status: str = Field(default="pending", index=True)
    reason: str = ""
    replicas: int = 1
    cpu: float = 1.0
    memory: int = 2048
    gpu: int = 0
    env: str = Field(default="{}", sa_column=Column(Text, default="{}"))
    restart_requested: bool = False
    stop_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    deployed_at: datetime | None = None
    stopped_at: datetime | None = None


class Replica(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployment.id", index=True, ondelete="CASCADE")
    name: str = Field(unique=True)
    status: str = ReplicaStatus.STARTING
    reason: str = ""
    handle: str = ""  # the runtime's own name for it: opaque here
    output_offset: int = 0  # how far its output was filed into the log
    restarts: int = 0
    received: int = 0
    processed: int = 0
    success: int = 0
    failure: int = 0
    busy_waits: int = 0
    started_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """Keys for models with authentication on; only a hash is kept."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    key_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)


ENV_SCOPES = ("global", "project", "model", "deployment", "job")


class EnvVar(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("scope", "scope_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str
    scope_id: int = 0
    key: str
    value: str = Field(default="", sa_column=Column(Text, default=""))


class TrackedMetric(SQLModel, table=True):
    """What model code tracked (cdsw/cml metrics API): one row per call with metrics on
    (``uuid`` set; delayed metrics are merged into it), per ``track_metric`` outside a
    call, and per aggregate over a window. Times are ms since the epoch, as in CML."""

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True, ondelete="CASCADE")
    deployment_id: int | None = Field(
        default=None, foreign_key="deployment.id", index=True, ondelete="CASCADE"
    )
    build_id: int | None = Field(default=None, foreign_key="build.id", ondelete="CASCADE")
    uuid: str | None = Field(default=None, index=True)
    start_ms: int = Field(index=True)
    end_ms: int
    replica: str = ""
    aggregate: bool = False
    metrics: str = Field(default="{}", sa_column=Column(Text, default="{}"))


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEDOUT = "timedout"


RUN_FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMEDOUT)


class Job(SQLModel, table=True):
    """A project script run on demand, on a cron schedule, or after another job's run
    succeeded (CDSW's Jobs). Its own variables are EnvVar rows of scope ``job``."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    name: str
    script: str
    args: str = Field(default="[]", sa_column=Column(Text, default="[]"))  # JSON list
    schedule: str = ""  # cron, five fields ("": none)
    after_job_id: int | None = Field(default=None, foreign_key="job.id", ondelete="SET NULL")
    timeout: float = 0.0  # seconds (0: none)
    cpu: float = 1.0
    memory: int = 2048
    next_run_at: datetime | None = None  # the schedule's next firing (UTC)
    created_at: datetime = Field(default_factory=utcnow)


class Application(SQLModel, table=True):
    """A supervised long-running process of a project (CML's Applications): its script
    serves on ``port`` of 127.0.0.1 (``CDSW_APP_PORT``). Each start of it is a JobRun
    with ``app_id`` set; the controller starts it again with back-off when it ends while
    ``desired`` is ``running``. ``name`` is the display name as given; ``subdomain`` is
    unique and names it in URLs and on the command line."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    name: str
    subdomain: str = Field(unique=True)
    description: str = ""
    script: str
    environment: str = Field(default="{}", sa_column=Column(Text, default="{}"))  # JSON
    cpu: float = 1.0
    memory: int = 2048
    port: int = Field(unique=True)
    desired: str = "running"  # running or stopped
    status: str = "starting"  # starting, running, restarting, stopping, stopped, failed
    reason: str = ""
    restarts: int = 0
    restart_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None


class AmpTask(SQLModel, table=True):
    """One task of an AMP's ``.project-metadata.yaml``, in order (``position`` from 0):
    what it says (``spec``, JSON), how far it got, and what it made (``entity``:
    ``job:3``, ``run:7``, ``model:2``, ``build:5``, ``deployment:4`` or ``app:1``)."""

    __table_args__ = (UniqueConstraint("project_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    position: int
    type: str
    name: str = ""
    spec: str = Field(default="{}", sa_column=Column(Text, default="{}"))
    status: str = "pending"  # pending, running, succeeded, failed
    detail: str = ""
    entity: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobRun(SQLModel, table=True):
    """One execution of a job's script, a one-off run (``job_id`` None), or one start of
    an application (``app_id`` set). Numbered per job from 1 (one-off runs per project,
    an application's starts per application). The partial unique index keeps one run of
    a job queued or running at a time, so of two starts at once the database picks one."""

    __table_args__ = (
        UniqueConstraint("project_id", "job_id", "number"),
        Index(
            "one_active_run_per_job",
            "job_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running') AND job_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True, ondelete="CASCADE")
    app_id: int | None = Field(
        default=None, foreign_key="application.id", index=True, ondelete="CASCADE"
    )
    number: int
    script: str
    args: str = Field(default="[]", sa_column=Column(Text, default="[]"))
    trigger: str = "manual"  # manual, schedule, after <job>/<run>, one-off
    status: str = Field(default="queued", index=True)
    reason: str = ""
    exit_code: int | None = None
    timeout: float = 0.0
    cpu: float = 1.0
    memory: int = 2048
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
