"""The decoding as a picture: each code token narrows the catalogue, drawn as the beam search goes.

Column 0 is the whole catalogue; column ``l`` holds the partial codes still alive after token ``l``
(the best few, each sized by how many products lie under it and coloured by its score), joined to
the prefix they grew from; the last column names the recommended products. The figure is rebuilt
after every step, so a streaming UI shows it growing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from eager.decoding.engine import BeamStep
from eager.index.item_index import ItemIndex, code_token

SHOWN_BRANCHES = 7  # per column: more would not be readable at 390 px


@dataclass(frozen=True)
class Branch:
    """One surviving partial code after a decoding step."""

    level: int
    code: tuple[int, ...]
    score: float
    products: int  # catalogue items whose code starts with ``code``
    example: str  # the title of one of them


def branches(step: BeamStep, index: ItemIndex, title_of: Callable[[str], str], user: int = 0) -> list[Branch]:
    """A step's surviving codes for one user, best first, with what lies under each."""
    out = []
    for code, score in step.beams[user]:
        under = np.flatnonzero((index.codes[:, : len(code)] == np.asarray(code)).all(1))
        out.append(Branch(step.level, tuple(code), float(score), len(under), title_of(index.keys[int(under[0])])))
    return out


def reachable(step_branches: Sequence[Branch]) -> int:
    """How many products the surviving branches of one step still cover."""
    return sum(b.products for b in step_branches)


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _tokens(code: Sequence[int]) -> str:
    return "".join(code_token(level, value) for level, value in enumerate(code))


def decoding_figure(
    steps: Sequence[BeamStep],
    index: ItemIndex,
    title_of: Callable[[str], str],
    recommended: Sequence[tuple[str, str]] = (),
    shown: int = SHOWN_BRANCHES,
) -> go.Figure:
    """The beam search so far: ``steps`` decoded, then (once it ends) ``recommended`` (key, title) pairs."""
    levels = index.levels
    every = [branches(step, index, title_of) for step in steps]
    columns = [found[:shown] for found in every]
    alive = [len(step.beams[0]) for step in steps]
    fig = go.Figure()
    total = len(index.keys)
    ys: list[float] = []
    positions: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, 0.5)}

    def y_of(rank: int, count: int) -> float:
        return 0.5 if count == 1 else 1.0 - rank / (count - 1)

    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    node_x, node_y, node_size, node_color, node_text, node_hover = [], [], [], [], [], []
    for column in columns:
        for rank, branch in enumerate(column):
            x, y = float(branch.level + 1), y_of(rank, len(column))
            positions[branch.code] = (x, y)
            parent = positions.get(branch.code[:-1])
            if parent is not None:
                edge_x += [parent[0], x, None]
                edge_y += [parent[1], y, None]
            node_x.append(x)
            node_y.append(y)
            node_size.append(10 + 6 * np.log10(max(branch.products, 1)))
            node_color.append(branch.score)
            node_text.append(f"{code_token(branch.level, branch.code[-1])} · {branch.products:,}")
            node_hover.append(f"{_tokens(branch.code)}<br>{branch.products:,} products, e.g. "
                              f"{_short(branch.example, 50)}<br>log-probability {branch.score:.2f}")
    final_x = float(levels + 1)
    for rank, (key, title) in enumerate(recommended):
        code = index.code_of(key)
        y = y_of(rank, len(recommended))
        parent = positions.get(tuple(code))
        if parent is not None:
            edge_x += [parent[0], final_x, None]
            edge_y += [parent[1], y, None]
        ys.append(y)
    fig.add_trace(go.Scatter(x=edge_x, y=edge_y, mode="lines", line={"color": "#c9ced6", "width": 1.5},
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(
        x=[0.0], y=[0.5], mode="markers+text", marker={"size": 26, "color": "#4b5563"},
        text=[f"{total:,} products"], textposition="bottom center", hoverinfo="text",
        hovertext=[f"The whole catalogue: {total:,} products, each a path of {levels} code tokens"], showlegend=False))
    if node_x:
        fig.add_trace(go.Scatter(
            x=node_x, y=node_y, mode="markers+text", text=node_text, textposition="middle right",
            textfont={"size": 11}, hovertext=node_hover, hoverinfo="text", showlegend=False,
            marker={"size": node_size, "color": node_color, "colorscale": "Viridis", "line": {"width": 1, "color": "white"},
                    "colorbar": {"title": {"text": "log-prob", "side": "right"}, "thickness": 10, "len": 0.6}}))
    if recommended:
        fig.add_trace(go.Scatter(
            x=[final_x] * len(recommended), y=ys, mode="markers+text", showlegend=False,
            text=[f"{r + 1}. {_short(title, 34)}" for r, (_, title) in enumerate(recommended)],
            textposition="middle right", textfont={"size": 11, "color": "#111827"},
            marker={"size": 12, "symbol": "star", "color": "#e11d48"},
            hovertext=[f"{r + 1}. {title}<br>{index.text_of(key)}" for r, (key, title) in enumerate(recommended)],
            hoverinfo="text"))
    headers = ["catalogue"]
    for level in range(levels):
        source = index.level_sources[level]
        head = f"token {level + 1}<br><sub>{'text' if source == 'semantic' else 'behaviour'}</sub>"
        if level < len(columns):
            head += f"<br><sub>{alive[level]} alive · {reachable(every[level]):,} products</sub>"
        headers.append(head)
    headers.append("recommended")
    for x, head in enumerate(headers):
        fig.add_annotation(x=x, y=1.14, text=head, showarrow=False, font={"size": 12}, yref="y")
    fig.update_layout(
        height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, plot_bgcolor="white", paper_bgcolor="white",
        xaxis={"range": [-0.3, levels + 2.4], "visible": False, "fixedrange": True},
        yaxis={"range": [-0.1, 1.25], "visible": False, "fixedrange": True},
        hoverlabel={"bgcolor": "white"},
    )
    return fig
