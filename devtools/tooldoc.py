"""Print the README's "Registered tools" table from the tool registry: `python -m devtools.tooldoc`.

The README holds the table as plain text; a unit test checks it still matches the registry.
"""

from __future__ import annotations

from chalicelib.sandbox.argspec import Option
from chalicelib.sandbox.tools import TOOLS


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(tool: str, option: Option) -> str:
    spelled = ", ".join(f"`{spelling}`" for spelling in option.spellings())
    value = _cell(option.value.describe()) if option.value else ""
    return f"| {tool} | {spelled} | {value} | {_cell(option.help)} |"


def table() -> str:
    """One row per allowed option, tool by tool, as a Markdown table."""
    lines = ["| tool | option | value | meaning |", "|---|---|---|---|"]
    for name, tool in TOOLS.items():
        lines += [_row(name, option) for option in tool.grammar.options]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
