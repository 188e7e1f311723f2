"""The wizard's breadcrumb: Dataset › Captions › Steps › Parameters › Train, with the current step lit."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

STEPS = ("Dataset", "Captions", "Steps", "Parameters", "Train")


class StepHeader(Widget):
    DEFAULT_CSS = """
    StepHeader { height: 1; background: $panel; padding: 0 1; }
    """
    current: reactive[int] = reactive(0)

    def render(self) -> Text:
        text = Text()
        for index, name in enumerate(STEPS):
            if index:
                text.append(" › ", style="dim")
            style = "bold reverse" if index == self.current else ("" if index < self.current else "dim")
            text.append(f" {index + 1} {name} ", style=style)
        return text
