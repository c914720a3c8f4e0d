"""What a replica is started with: its build's artifact, the variables of every level
(CDSW's engine variables, the user's global < project < model < deployment, then the ids
no one overrides), its resources, where it may be placed, and as whom it runs."""

from __future__ import annotations

from cdsw_tui.controller.state import Context
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.runtime import ReplicaSpec
from cdsw_tui.services import env as env_service
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Project, pk


class SpecBuilder:
    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    def _egress(self, project: Project) -> bool:
        """As the project says now (``project egress``): replicas started from now on."""
        with self.wb.store.session() as s:
            row = s.get(Project, project.id)
        return row.egress if row is not None else project.egress

    def spec(self, ctx: Context, name: str) -> ReplicaSpec:
        """Reads the variables from the store: run it in a thread."""
        d, model, build, project = ctx.deployment, ctx.model, ctx.build, ctx.project
        variables = env_service.workbench_variables(
            self.wb,
            project,
            model,
            engine_id=name,
            build_id=build.id,
            deployment_id=d.id,
            cpu=d.cpu,
            memory=d.memory,
        )
        variables.update(env_service.resolve(self.wb, model, d))
        variables.update(
            {
                "CDSW_PROJECT": project.name,
                "CDSW_PROJECT_ID": str(project.id),
                "CDSW_MODEL_ID": str(model.id),
                "CDSW_MODEL_NAME": model.name,
                "CDSW_BUILD_NUMBER": str(build.number),
                "CDSW_DEPLOYMENT_ID": str(d.id),
                "CDSW_REPLICA_ID": name,
            }
        )
        return ReplicaSpec(
            name=name,
            deployment_id=pk(d),
            model_id=pk(model),
            artifact=build.image_id or build.artifact,
            env_path=build.env_path,
            file=build.file,
            function=build.function,
            kernel=build.kernel,
            environment=variables,
            cpu=d.cpu,
            memory=d.memory,
            gpu=d.gpu,
            placement=tuple(c for c in project.placement.splitlines() if c),
            egress=self._egress(project),
            uid=replica_identity(self.wb.settings.replica_uid).uid,
        )
