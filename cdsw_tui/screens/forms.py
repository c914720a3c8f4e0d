"""Form helpers: a labelled field whose error is shown under it and marked in red."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label

from cdsw_tui.errors import CdswError


class Field(Vertical):
    DEFAULT_CSS = """
    Field { height: auto; margin-bottom: 1; }
    Field > .field-label { color: $text-muted; }
    Field > .field-error { color: $error; height: auto; display: none; }
    Field.-invalid > .field-error { display: block; }
    Field.-invalid Input, Field.-invalid Select > SelectCurrent, Field.-invalid TextArea { border: tall $error; }
    """

    def __init__(self, label: str, widget: Widget, *, name: str) -> None:
        super().__init__(id=f"field-{name}")
        self.label = label
        self.widget = widget
        self.field_name = name

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="field-label")
        yield self.widget
        yield Label("", classes="field-error")

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Label).update(message or "")


def mark_error(screen: Widget, field: str | None, message: str) -> bool:
    """Mark the named field; False if the form has no such field."""
    for form_field in screen.query(Field):
        form_field.set_error(None)
    if field:
        matches = screen.query(f"#field-{field}")
        if matches:
            target = matches.first(Field)
            target.set_error(message)
            target.widget.focus()
            return True
    return False


def show_error(screen: Widget, exc: CdswError) -> None:
    """A refused form: the field the error names is marked, else a notification says it."""
    if not mark_error(screen, exc.field, exc.message):
        screen.notify(exc.message, severity="error")
