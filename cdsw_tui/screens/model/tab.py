"""What a tab of the model screen is: a widget that fills itself from the model's detail,
owns the actions that work on it, and says which of them can run now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.widget import Widget

if TYPE_CHECKING:
    from cdsw_tui.screens.model import ModelScreen
    from cdsw_tui.services.readmodels import ModelDetail


class ModelTab(Widget):
    """Mixed in after a container class (``class BuildsTab(Vertical, ModelTab)``: Textual
    takes CSS type names from the first base); ``ACTIONS`` are the screen's actions this tab runs
    (their keys show in the footer only on this tab), ``FOCUS`` what takes the focus."""

    ACTIONS: ClassVar[tuple[str, ...]] = ()
    FOCUS: ClassVar[str | None] = None

    @property
    def model_screen(self) -> ModelScreen:
        return cast("ModelScreen", self.screen)

    @property
    def wb(self) -> Any:
        return self.model_screen.wb

    @property
    def detail(self) -> ModelDetail | None:
        return self.model_screen.detail

    def show(self, detail: ModelDetail) -> None:
        """Fill the tab from a fresh read of the model (on the UI thread)."""

    def can(self, action: str, detail: ModelDetail | None) -> bool:
        """Whether ``action`` (one of ACTIONS) can run now."""
        return True
