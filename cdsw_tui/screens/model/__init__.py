"""A model, with CDSW's tabs: Overview (details, Test Model, samples), Builds, Deployments,
Monitoring (replicas, rates, logs) and Settings (access key, environment, delete).

Each tab is a widget of its own module that fills itself and owns its actions; this
screen holds the tabs, the poll that reads the model, the keys and the navigation, and
(``actions``) what works on every work tab."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, Label, TabbedContent, TabPane, Tabs, TextArea

from cdsw_tui.screens.model.actions import DeploymentActions
from cdsw_tui.screens.model.builds import BuildsTab
from cdsw_tui.screens.model.deployments import DeploymentsTab
from cdsw_tui.screens.model.monitoring import MonitoringTab
from cdsw_tui.screens.model.overview import OverviewTab
from cdsw_tui.screens.model.settings import SettingsTab
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import readmodels
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge
from cdsw_tui.widgets.test_pane import TestPane

TABS: tuple[tuple[str, str, type[ModelTab]], ...] = (
    ("overview", "Overview", OverviewTab),
    ("builds", "Builds", BuildsTab),
    ("deployments", "Deployments", DeploymentsTab),
    ("monitoring", "Monitoring", MonitoringTab),
    ("settings", "Settings", SettingsTab),
)
WORK_TABS = ("overview", "builds", "deployments", "monitoring")
MODEL_ACTIONS = ("deploy_new_build", "build_only", "stop", "restart", "scale")
FOOTER = "footer"  # the parameter of a key's copy shown in the footer of a wide screen
WIDE = 100  # columns from which the footer has room for them
DEPLOYMENT_ACTIONS = ("stop", "restart", "scale")  # need a deployment: refused, they say why
SAYS_WHY = ("cancel_build",)  # a tab's actions shown while refused, which say why when pressed


def _letter_actions(bindings: list[Any]) -> frozenset[str]:
    """The actions of single-letter keys: a focused text box takes those letters."""
    return frozenset(
        b.action.partition("(")[0] for b in bindings if isinstance(b, Binding) and len(b.key) == 1
    )


_TIPS = {
    "test": "Test Model: send the input, show the answer (Overview)",
    "copy": "copy the sample call (Overview)",
    "lang": "shell, Python or R sample (Overview)",
    "new": "the deploy form, set to a new build of the code as it is now",
    "build": "build only, no deploy",
    "cancel": "cancel the selected build (Builds)",
    "redeploy": "the deploy form, set to the selected deployment's build (Deployments)",
    "scale": "change the running deployment's replica count, no new build",
    "stop": "stop the model's replicas",
    "restart": "replace the replicas one by one",
    "key": "show or hide the access key (Settings)",
    "newkey": "regenerate the access key; the old one stops working (Settings)",
    "save": "save the model's variables (Settings)",
    "delete": "delete the model, its builds and logs (Settings)",
}


def _on_tab(action: str) -> Callable[..., None]:
    """The screen's action ``action``: run by the shown tab, whose keys it is."""

    def run(self: ModelScreen, *args: str) -> None:
        tab = self.shown_tab()
        if action in tab.ACTIONS:
            getattr(tab, f"action_{action}")(*args)

    run.__name__ = f"action_{action}"
    return run


class ModelScreen(DeploymentActions):
    DEFAULT_CSS = """
    ModelScreen.short #requests-table { display: none; }
    ModelScreen.short #builds-table { height: 5; }  /* the build log keeps its room */
    """
    # the footer shows what matters on the tab (it fits 80 columns); Help lists them all
    BINDINGS = [
        Binding("escape", "back", "Back", id="nav.back"),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('builds')", "Builds", show=False),
        Binding("3", "tab('deployments')", "Deployments", show=False),
        Binding("4", "tab('monitoring')", "Monitoring", show=False),
        Binding("5", "tab('settings')", "Settings", show=False),
        Binding("ctrl+t", "test", "Test", id="model.test", tooltip=_TIPS["test"]),
        Binding("c", "copy_sample", "Copy", id="model.copy", tooltip=_TIPS["copy"]),
        Binding("l", "next_lang", "Language", id="model.lang", show=False, tooltip=_TIPS["lang"]),
        Binding(
            "n",
            "deploy_new_build",
            "Deploy New Build",
            id="model.deploy_new_build",
            tooltip=_TIPS["new"],
        ),
        # b, s and R: first a copy for the footer where it has room (the first enabled
        # binding of a key is the one that acts and shows), then the key at any width
        Binding("b", f"build_only('{FOOTER}')", "Build", tooltip=_TIPS["build"]),
        Binding("b", "build_only", "Build", id="model.build", show=False, tooltip=_TIPS["build"]),
        Binding(
            "x", "cancel_build", "Cancel Build", id="model.cancel_build", tooltip=_TIPS["cancel"]
        ),
        Binding("r", "redeploy", "Re-deploy", id="model.redeploy", tooltip=_TIPS["redeploy"]),
        Binding("s", f"scale('{FOOTER}')", "Scale", tooltip=_TIPS["scale"]),
        Binding("s", "scale", "Scale", id="model.scale", show=False, tooltip=_TIPS["scale"]),
        Binding("S", "stop", "Stop", id="model.stop", tooltip=_TIPS["stop"]),
        Binding("R", f"restart('{FOOTER}')", "Restart", tooltip=_TIPS["restart"]),
        Binding(
            "R", "restart", "Restart", id="model.restart", show=False, tooltip=_TIPS["restart"]
        ),
        Binding("v", "reveal_key", "Key", id="model.reveal", tooltip=_TIPS["key"]),
        Binding("g", "regenerate_key", "New key", id="model.regenerate", tooltip=_TIPS["newkey"]),
        Binding("ctrl+s", "save_env", "Save", id="model.save_env", tooltip=_TIPS["save"]),
        Binding("ctrl+d", "delete_model", "Delete", id="model.delete", tooltip=_TIPS["delete"]),
        # the log's keys act on the tab's log whatever has focus (Builds, Monitoring)
        Binding("f", "log('toggle_follow')", "Follow", show=False, tooltip="follow the log"),
        Binding("w", "log('toggle_wrap')", "Wrap", show=False, tooltip="wrap long log lines"),
        Binding("t", "log('toggle_timestamps')", "Timestamps", show=False, tooltip="log times"),
        Binding("slash", "log('filter')", "Filter", show=False, tooltip="filter the log"),
        Binding("a", "log('next_source')", "Replica", show=False, tooltip="one replica, or all"),
    ]
    LETTER_ACTIONS = _letter_actions(BINDINGS)
    AUTO_FOCUS = ""  # none (None would mean the app's "*"): focus follows the tab, in action_tab
    # where each key acts (and shows): a tab's own actions there, the model's on work tabs
    TAB_ACTIONS: dict[str, tuple[str, ...]] = {
        **{a: WORK_TABS for a in MODEL_ACTIONS},
        **{
            action: tuple(tab_id for tab_id, _, c in TABS if action in c.ACTIONS)
            for _, _, cls in TABS
            for action in cls.ACTIONS
        },
    }

    def __init__(self, ref: str, tab: str = "overview") -> None:
        super().__init__()
        self.ref = ref
        self.initial_tab = tab
        self.detail: ModelDetail | None = None
        self.tabs: dict[str, ModelTab] = {
            "overview": OverviewTab(ref),
            "builds": BuildsTab(),
            "deployments": DeploymentsTab(),
            "monitoring": MonitoringTab(ref),
            "settings": SettingsTab(ref),
        }

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Model [b]{self.ref}[/b]", id="title", classes="screen-title")
        with TabbedContent(initial=self.initial_tab, id="tabs"):
            for tab_id, title, _ in TABS:
                with TabPane(title, id=tab_id):
                    yield self.tabs[tab_id]
        yield Footer()

    # -- data ---------------------------------------------------------------------------------

    def load(self) -> ModelDetail:
        return readmodels.model_detail(self.wb, self.ref)

    def show(self, detail: ModelDetail) -> None:
        self.detail = detail
        self.query_one("#title", Label).update(
            f"Model [b]{self.ref}[/b]  " + badge(detail.status).markup
        )
        for tab in self.tabs.values():
            tab.show(detail)
        self.refresh_bindings()

    # -- tabs and keys ------------------------------------------------------------------------

    def on_mount(self) -> None:  # PollingScreen's on_mount runs too: Textual calls both
        # the tab bar takes no focus: digits switch tabs, so typing there would
        self.query_one(TabbedContent).query_one(Tabs).can_focus = False
        self.call_after_refresh(self._focus_tab)  # the tab the user is on by then
        self._sync_logs()

    def action_back(self) -> None:
        """Escape in a text box leaves the box, not the screen (a second one does)."""
        if isinstance(self.focused, (Input, TextArea)):
            self.set_focus(None)
        else:
            self.app.pop_screen()

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()  # a text box takes the letters, or gives them back

    def on_descendant_blur(self) -> None:
        self.refresh_bindings()

    def on_resize(self) -> None:
        self.set_class(self.size.height < 32, "short")  # the recent calls give the log room
        self.refresh_bindings()  # the footer's room changed too

    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active or "overview"

    def shown_tab(self) -> ModelTab:
        return self.tabs[self.active_tab()]

    def check_action(self, action: str, parameters: tuple[Any, ...]) -> bool | None:
        if parameters == (FOOTER,) and self.size.width < WIDE:
            return False
        if action in self.LETTER_ACTIONS and isinstance(self.focused, (Input, TextArea)):
            return False  # the letter is typed there: it neither acts nor shows

        tabs = self.TAB_ACTIONS.get(action)
        if tabs is not None and self.active_tab() not in tabs:
            return False
        d = self.detail
        if action in DEPLOYMENT_ACTIONS:  # None: shown, refused, and says why
            active = d.active if d is not None else None
            can = active is not None and (action == "stop" or active.status == "deployed")
            return True if can else None
        tab = self.shown_tab()
        if action in tab.ACTIONS:
            return True if tab.can(action, d) else (None if action in SAYS_WHY else False)
        return True

    def refusal(self, action: str) -> str:
        d = self.detail
        if d is None:
            return f"{self.ref} is still loading"
        if action == "cancel_build":
            return f"no build of {self.ref} is queued or running: nothing to cancel"
        if action not in DEPLOYMENT_ACTIONS:
            return ""
        if d.active is None:
            return f"{self.ref} is not deployed: nothing to {action}"
        return f"{self.ref} is {d.active.status}: {action} it once it is deployed"

    action_test = _on_tab("test")
    action_copy_sample = _on_tab("copy_sample")
    action_next_lang = _on_tab("next_lang")
    action_cancel_build = _on_tab("cancel_build")
    action_redeploy = _on_tab("redeploy")
    action_log = _on_tab("log")
    action_reveal_key = _on_tab("reveal_key")
    action_regenerate_key = _on_tab("regenerate_key")
    action_save_env = _on_tab("save_env")
    action_delete_model = _on_tab("delete_model")

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()
        self._sync_logs()

    def on_screen_suspend(self) -> None:
        self._sync_logs()

    def on_screen_resume(self) -> None:  # PollingScreen's reloads too: Textual calls both
        self._sync_logs()

    def _sync_logs(self) -> None:
        """Each log view reads while its tab is shown and this screen is on top, else it
        is paused: decided from the state now, so quick switches cannot leave it wrong."""
        tab = self.active_tab() if self.is_current else None
        self.query_one("#build-log", LogView).set_active(tab == "builds")
        self.query_one("#replica-log", LogView).set_active(tab == "monitoring")

    def action_tab(self, tab: str) -> None:
        # a widget focused on the old tab would pull the tabs back to it when it hides
        self.set_focus(None)
        self.query_one(TabbedContent).active = tab
        self.call_after_refresh(self._focus_tab)
        self.refresh_bindings()

    def _focus_tab(self) -> None:
        """The shown tab's table takes the focus (it takes no letters: every key still
        acts); other tabs leave it with nobody."""
        selector = self.shown_tab().FOCUS
        if selector is not None:
            self.query_one(selector).focus()

    @on(TestPane.Done)
    def _tested(self, event: TestPane.Done) -> None:
        self.query_one(MonitoringTab).tested(event.latency)
        self.reload()
