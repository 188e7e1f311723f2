"""F1 / `?`: every key of the current screen and the global ones, read from the bindings so it cannot drift."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


def _own_nodes(screen: Screen) -> list[DOMNode]:
    """The app, the screen and every shown loratui widget on it (the visible wizard step), outermost first."""
    nodes: list[DOMNode] = [screen.app, screen]
    for widget in screen.query("*"):
        shown = all(getattr(node, "display", True) for node in (widget, *widget.ancestors))
        if type(widget).__module__.startswith("loratui.") and shown:
            nodes.append(widget)
    return nodes


def _bindings_of(node: DOMNode) -> list[Binding]:
    """A node's bindings, its own class first then inherited ones, one Binding per key."""
    found: list[Binding] = []
    for cls in type(node).__mro__:
        if "BINDINGS" in cls.__dict__:
            found.extend(Binding.make_bindings(cls.__dict__["BINDINGS"]))
    return found


def key_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(where, key, what it does) for every described binding that applies on ``screen``."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()  # outer bindings come first and win, as priority bindings do
    for node in _own_nodes(screen):
        where = "everywhere" if node is screen.app else ("this screen" if node is screen
                                                         else type(node).__name__.removesuffix("Step"))
        for binding in _bindings_of(node):
            key_name = binding.key
            if not binding.description or binding.system or key_name.startswith("super+") or key_name in seen:
                continue
            if node is not screen.app and not node.check_action(binding.action, ()):
                continue
            seen.add(key_name)
            rows.append((where, screen.app.get_key_display(binding), binding.tooltip or binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; max-width: 100; height: auto; max-height: 90%; border: thick $primary;
                            background: $surface; padding: 0 1; }
    HelpScreen VerticalScroll { height: auto; max-height: 18; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close", id="help.close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(style="dim")
        for where, key, what in key_rows(self.under):
            table.add_row(Text(key), Text(what), Text(where))
        with Vertical():
            yield Label(Text("Keys (Esc closes; Tab moves between fields; Ctrl+P: all commands)", style="bold"))
            with VerticalScroll(id="help-keys"):
                yield Static(table, id="help-table")
