"""Help: the keys of the screen underneath, and the habits borrowed from k9s."""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

GENERAL = """\
## Everywhere

| key | |
|---|---|
| `?` / `F1` | this help |
| `ctrl+p` | command palette: jump to any project or model, run actions |
| `escape` | back |
| `ctrl+q` | quit |

## Logs (Builds and Monitoring tabs)

`f` follow, `w` wrap, `t` timestamps, `/` filter, `a` one replica or all, `End` follow again.
"""


ResultT = TypeVar("ResultT")


class Dialog(ModalScreen[ResultT]):
    """A dialog or a form over a screen: ? and F1 show its keys too (a modal screen
    takes no key of the app's). In a text box ? is typed; F1 still helps."""

    DEFAULT_CSS = """
    Dialog > .dialog { width: 80; max-width: 100%; height: auto; max-height: 100%; border: thick $primary; background: $surface; padding: 0 2; }
    Dialog .dialog > .fields { height: auto; max-height: 70vh; padding-top: 1; }
    Dialog .dialog > .buttons { height: auto; align-horizontal: right; margin: 1 0; }
    Dialog .dialog > .buttons Button { margin-left: 2; }
    """
    BINDINGS = [Binding("question_mark,f1", "app.help", "Help", id="dialog.help")]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "app.pop_screen", "Close", id="help.close")]

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        rows = "\n".join(f"| `{key}` | {description} |" for key, description in self.keys)
        text = f"# {self.title_text}\n\n| key | |\n|---|---|\n{rows}\n\n{GENERAL}"
        with VerticalScroll():
            yield Markdown(text)
