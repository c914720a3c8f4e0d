"""A JSON editor validated as you type: the border and a note say what is wrong."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, TextArea


class JsonEditor(Vertical):
    DEFAULT_CSS = """
    JsonEditor { height: auto; }
    JsonEditor TextArea { height: 6; }
    JsonEditor .note { color: $error; height: auto; }
    JsonEditor.-invalid TextArea { border: tall $error; }
    """

    def __init__(
        self, text: str = "", *, id: str | None = None, height: int = 6, allow_empty: bool = True
    ) -> None:
        super().__init__(id=id)
        self._text = text
        self._height = height
        self.allow_empty = allow_empty

    def compose(self) -> ComposeResult:
        area = TextArea(self._text, language="json", soft_wrap=True, show_line_numbers=False)
        area.styles.height = self._height
        yield area
        yield Label("", classes="note")

    @property
    def text(self) -> str:
        return self.query_one(TextArea).text

    @text.setter
    def text(self, value: str) -> None:
        self.query_one(TextArea).text = value

    def error(self) -> str | None:
        value = self.text
        if not value.strip():
            return None if self.allow_empty else "must not be empty"
        try:
            json.loads(value)
        except ValueError as exc:
            return f"not valid JSON: {exc}"
        return None

    def on_text_area_changed(self, _event: TextArea.Changed) -> None:
        problem = self.error()
        self.set_class(problem is not None, "-invalid")
        self.query_one(".note", Label).update(problem or "")
