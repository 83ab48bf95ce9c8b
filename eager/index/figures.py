"""The code hierarchy as a plotly sunburst: level-1 code → level-2 code → items.

A 12k-item catalogue is too many wedges to draw, so only some level-1 branches are expanded down
to their items (those holding highlighted items, or the largest few); the others are drawn as one
wedge each, sized by their item count, with example titles on hover.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import plotly.graph_objects as go

from eager.data.dataset import InteractionData
from eager.index.item_index import ItemIndex, code_token

HIGHLIGHT = "#d62728"
EXPANDED = "#9ecae1"
COLLAPSED = "#e5e5e5"


def _short(text: str, width: int = 60) -> str:
    text = text or "(no title)"
    return text if len(text) <= width else text[: width - 1] + "…"


def code_tree_figure(
    index: ItemIndex,
    data: InteractionData,
    highlight: Iterable[str] = (),
    source: str | None = None,
    expand: Iterable[int] | None = None,
    default_expand: int = 6,
    title: str | None = None,
    merge_collapsed: bool = False,
) -> go.Figure:
    """Sunburst of one source's code levels (semantic by default) with ``highlight`` items marked.

    ``expand`` lists level-1 codes to open down to items; by default the branches of the
    highlighted items, else the ``default_expand`` largest. ``merge_collapsed`` draws all the
    unopened branches as one grey wedge, so the opened ones fill the circle (the demo's view).
    """
    source = source or ("semantic" if "semantic" in index.level_sources else index.level_sources[0])
    levels = [l for l, s in enumerate(index.level_sources) if s == source]
    if not levels:
        raise ValueError(f"this index has no {source!r} levels (it has {sorted(set(index.level_sources))})")
    highlight = [k for k in highlight]
    for key in highlight:
        index.row(key)  # unknown keys fail loudly, naming the key
    titles = dict(zip(data.item_keys, data.titles))
    codes = index.codes[:, levels]
    first = codes[:, 0]
    sizes = np.bincount(first, minlength=index.k)
    marked = {index.row(k) for k in highlight}
    if expand is None:
        expand = {int(first[r]) for r in marked} or set(np.argsort(-sizes, kind="stable")[:default_expand].tolist())
    expand = set(int(e) for e in expand)

    ids, labels, parents, values, colors, hovers = [], [], [], [], [], []

    def add(node_id, label, parent, value, color, hover):
        ids.append(node_id), labels.append(label), parents.append(parent)
        values.append(value), colors.append(color), hovers.append(hover)

    hot_prefixes = {tuple(codes[r, :d]) for r in marked for d in range(1, len(levels) + 1)}
    leaves_under: dict[str, int] = {}
    others = [int(t) for t in np.flatnonzero(sizes) if int(t) not in expand] if merge_collapsed else []
    if others:
        # Drawn at a third of the circle whatever its true size, so the opened branches stay legible.
        count = int(sizes[others].sum())
        opened = int(sizes.sum()) - count
        add("other", f"{len(others)} other codes ({count} items)", "", max(1, opened // 2), COLLAPSED,
            f"{len(others)} other {source} codes: {count} items (not to scale)")
    for top in np.flatnonzero(sizes):
        top = int(top)
        if top in others:
            continue
        token = code_token(levels[0], top)
        members = np.flatnonzero(first == top)
        examples = "<br>".join(_short(titles.get(index.keys[r], "")) for r in members[:5])
        color = HIGHLIGHT if (top,) in hot_prefixes else (EXPANDED if top in expand else COLLAPSED)
        add(token, token, "", int(sizes[top]), color, f"{token}: {sizes[top]} items<br>{examples}")
        if top not in expand:
            continue
        for r in members:
            parent = token
            for depth in range(1, len(levels)):
                prefix = tuple(int(c) for c in codes[r, : depth + 1])
                node = parent + code_token(levels[depth], prefix[-1])
                if node not in leaves_under:
                    leaves_under[node] = 0
                    add(node, code_token(levels[depth], prefix[-1]), parent, 0,
                        HIGHLIGHT if prefix in hot_prefixes else EXPANDED, node)
                leaves_under[node] += 1
                parent = node
            key = index.keys[r]
            item_title = titles.get(key, "")
            add(f"{parent}|{key}", _short(item_title, 28), parent, 1, HIGHLIGHT if r in marked else "#ffffff",
                f"{_short(item_title, 90)}<br>{key}<br>{index.text_of(key)}")
    # branchvalues="total": an inner wedge's value is the number of items beneath it.
    values = [leaves_under.get(i, v) for i, v in zip(ids, values)]

    figure = go.Figure(go.Sunburst(
        ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
        marker=dict(colors=colors, line=dict(color="#ffffff", width=0.5)),
        hovertext=hovers, hoverinfo="text", maxdepth=len(levels) + 1, insidetextorientation="radial",
    ))
    figure.update_layout(
        title=title or f"{data.name}: {source} code tree ({len(index.keys)} items, k={index.k})",
        margin=dict(l=0, r=0, t=40, b=0), height=600,
    )
    return figure
