"""The one table format every benchmark suite prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    metric: str
    ours: float
    reference: float
    unit: str
    reference_name: str
    lower_is_better: bool = False

    @property
    def ratio(self) -> float:
        """> 1 means llmcli is better, whatever the unit's direction."""
        if self.lower_is_better:
            return self.reference / self.ours if self.ours else float("inf")
        return self.ours / self.reference if self.reference else float("inf")


def render_markdown(rows: list[Row], title: str) -> str:
    lines = [f"### {title}", "", "| metric | llmcli | reference | ratio (>1 = llmcli better) | reference is |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r.metric} | {r.ours:.1f} {r.unit} | {r.reference:.1f} {r.unit} | {r.ratio:.2f}× | "
                     f"{r.reference_name} |")
    return "\n".join(lines)
