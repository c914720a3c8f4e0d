"""What the model screen does to the model from any of its work tabs: Deploy New Build,
Build, Stop, Restart and Scale, and the deploy form Re-deploy opens too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdsw_tui.screens.base import PollingScreen
from cdsw_tui.screens.deploy import DeployScreen, ScaleScreen
from cdsw_tui.screens.model.builds import BuildsTab
from cdsw_tui.services import builds, deployments, models
from cdsw_tui.services import env as env_service
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.store import Deployment, Model, pk


class DeploymentActions(PollingScreen):
    """ModelScreen's base: what acts on the model from every work tab."""

    ref: str
    detail: ModelDetail | None

    def action_tab(self, tab: str) -> None:  # pragma: no cover - ModelScreen's
        raise NotImplementedError

    def model(self) -> Model:
        """The model as the store has it now (run in a worker: it reads the store)."""
        return models.resolve(self.wb, self.ref)

    def show_new_build(self) -> None:
        """Go to Builds, whose log goes to the build being asked for once a read has it."""
        newest = self.detail.builds[0].number if self.detail and self.detail.builds else 0
        self.query_one(BuildsTab).await_build_after(newest)
        self.action_tab("builds")

    def action_deploy_new_build(self) -> None:
        """The deploy form, set to a new build of the code as it is now (nothing is
        built or deployed until the form is sent)."""
        self.deploy_form(None, self.detail.active if self.detail else None, new=True)

    def action_build_only(self, *_shown: str) -> None:
        def go() -> None:
            builds.request(self.wb, self.model())
            self.workbench.ensure_controller()

        self.show_new_build()
        self.run_service(go, done="build queued")

    def deploy_form(
        self, build: int | None, start: Deployment | None, new: bool = False, scale: int = 0
    ) -> None:
        """One form for Deploy New Build and Re-deploy, carrying over the resources and
        variables of ``start`` (a deployment), else the model's defaults; ``scale``: the
        replica count, if not ``start``'s."""
        if self.detail is None:
            return
        built = [b.number for b in self.detail.builds if b.status == "built"]
        self.app.push_screen(
            DeployScreen(
                self.ref,
                None if new else build,
                start or self.detail.model,
                built,
                env_service.unpack(self.wb, start.env) if start is not None else {},
                scale or None,
            ),
            self._deployed,
        )

    def _deployed(self, result: int | None) -> None:
        if result == 0:  # a new build was queued: show it building
            self.show_new_build()
        self.reload()

    def _ask_controller(
        self, question: str, yes: str, change: Callable[[Any, Model], object], done: str
    ) -> None:
        """Ask, then make ``change`` (a deployments function of the model) in a worker and
        see that a controller runs to carry it out."""

        def go() -> None:
            change(self.wb, self.model())
            self.workbench.ensure_controller()

        self.ask(question, yes, go, done=done)

    def action_stop(self) -> None:
        self._ask_controller(
            f"Stop {self.ref}? Calls get model.not_deployed until it is deployed again.",
            "Stop",
            deployments.stop,
            done=f"{self.ref} stopping",
        )

    def action_scale(self, *_shown: str) -> None:
        if self.detail is None or self.detail.active is None:
            return
        d = self.detail.active
        self.app.push_screen(ScaleScreen(self.ref, pk(d), d.replicas), lambda _n: self.reload())

    def action_restart(self, *_shown: str) -> None:
        self._ask_controller(
            f"Restart every replica of {self.ref}, one by one?",
            "Restart",
            deployments.restart,
            done=f"{self.ref} restarting replica by replica",
        )
