"""Products as people see them: HTML cards for a basket, a recommendation list and a comparison.

Everything a visitor or the catalogue wrote is escaped here (titles hold markup now and then, and
a visitor's input may too). A picture is shown only where the prepared metadata has a web address
for it; elsewhere a placeholder tile carries the product's initials in a colour taken from its first
text code, so products that share it look alike. Nothing here fetches anything.
"""

from __future__ import annotations

import colorsys
import html
from collections.abc import Sequence

from eager.demo.service import DemoService, Recommended, RecommendOutcome
from eager.index.item_index import ItemIndex, code_token

# What each variant leaves out of the full model, in one line a visitor can read.
VARIANT_LINES = {
    "full": "The whole method: text and behaviour codes, contrastive alignment (GCT) and the annealing adapter.",
    "wo_dki": "No behaviour codes: all four tokens come from the product text alone.",
    "wo_gct": "No contrastive alignment: stage 1 trains without GCT.",
    "wo_aat": "No annealing adapter: the stage-1 model, before tuning on recommendation alone.",
}

CSS = """
.eg-cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
.eg-card{display:flex;gap:10px;border:1px solid #e5e7eb;border-radius:10px;padding:10px;background:#fff;min-width:0}
.eg-card.eg-hit{border:2px solid #e11d48;box-shadow:0 0 0 3px #ffe4e6}
.eg-img{flex:0 0 64px;height:64px;border-radius:8px;overflow:hidden;display:flex;align-items:center;
 justify-content:center;font-weight:700;font-size:20px;color:#fff}
.eg-img img{width:64px;height:64px;object-fit:contain;background:#fff}
.eg-body{min-width:0;flex:1;font-size:13px;line-height:1.35;color:#111827}
.eg-title{font-weight:600;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
.eg-meta{color:#6b7280;font-size:12px}
.eg-rank{font-size:11px;color:#6b7280}
.eg-code{font-family:ui-monospace,monospace;font-size:11px;margin:3px 0}
.eg-tok{padding:0 3px;border-radius:4px;margin-right:2px}
.eg-sem{background:#dbeafe;color:#1e3a8a}.eg-beh{background:#fef3c7;color:#78350f}
.eg-why{font-size:12px;color:#374151}
.eg-tag{display:inline-block;font-size:11px;border-radius:999px;padding:0 7px;margin-right:4px}
.eg-shared{background:#e0e7ff;color:#3730a3}.eg-unique{background:#dcfce7;color:#166534}
.eg-held{background:#ffe4e6;color:#9f1239}
.eg-compare{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px}
.eg-col{border:1px solid #e5e7eb;border-radius:10px;padding:10px;background:#fafafa;min-width:0}
.eg-col h4{margin:0 0 2px 0;font-size:15px}
.eg-col .eg-line{font-size:12px;color:#4b5563;margin-bottom:6px}
.eg-col ol{padding-left:20px;margin:0}
.eg-col li{font-size:12.5px;margin:3px 0;overflow-wrap:anywhere}
.eg-basket{display:flex;flex-wrap:wrap;gap:6px}
.eg-chip{border:1px solid #e5e7eb;border-radius:999px;padding:2px 10px;font-size:12px;background:#fff;max-width:260px;
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.eg-empty{color:#6b7280;font-size:13px}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _hue_colour(value: int) -> str:
    r, g, b = colorsys.hls_to_rgb((value * 0.61803) % 1.0, 0.42, 0.55)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _initials(title: str) -> str:
    words = [w for w in title.split() if w[:1].isalnum()]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def picture(info: dict, index: ItemIndex | None) -> str:
    """The product's picture where there is a web address for it, else its placeholder tile."""
    url = info.get("image", "")
    if url.startswith(("https://", "http://")):
        return (f'<div class="eg-img"><img src="{_e(url)}" alt="{_e(info["title"][:80])}" loading="lazy" '
                'referrerpolicy="no-referrer"></div>')
    first = 0
    if index is not None:
        try:
            first = index.code_of(info["key"])[0]
        except KeyError:
            pass
    return f'<div class="eg-img" style="background:{_hue_colour(first)}" aria-hidden="true">{_e(_initials(info["title"]))}</div>'


def code_html(key: str, index: ItemIndex | None) -> str:
    if index is None:
        return ""
    try:
        code = index.code_of(key)
    except KeyError:
        return ""
    tokens = [f'<span class="eg-tok {"eg-sem" if src == "semantic" else "eg-beh"}">{_e(code_token(level, value))}</span>'
              for level, (value, src) in enumerate(zip(code, index.level_sources))]
    return f'<div class="eg-code">{"".join(tokens)}</div>'


def why_html(shares: Sequence[dict]) -> str:
    """The history items that share the deepest text and behaviour prefix with a recommendation."""
    best: dict[str, dict] = {}
    for share in shares:
        if share["source"] not in best or share["depth"] > best[share["source"]]["depth"]:
            best[share["source"]] = share
    if not best:
        return '<div class="eg-why">Shares no code prefix with the basket.</div>'
    parts = []
    for source, share in best.items():
        what = "text" if source == "semantic" else "bought-together"
        parts.append(f"{what} code like “{_e(share['title'][:60])}”")
    return f'<div class="eg-why">Why: shares the {"; the ".join(parts)}.</div>'


def product_card(service: DemoService, item: Recommended, index: ItemIndex | None, held_out: str | None) -> str:
    info = service.item_info(item.key)
    meta = " · ".join(_e(v) for v in (info["brand"], info["category"]) if v)
    hit = item.key == held_out
    tags = '<span class="eg-tag eg-held">their real next purchase</span>' if hit else ""
    return (f'<div class="eg-card{" eg-hit" if hit else ""}" data-key="{_e(item.key)}">{picture(info, index)}'
            f'<div class="eg-body"><div class="eg-rank">#{item.rank} · score {item.score:.2f} {tags}</div>'
            f'<div class="eg-title" title="{_e(info["title"])}">{_e(info["title"])}</div>'
            + (f'<div class="eg-meta">{meta}</div>' if meta else "")
            + f"{code_html(item.key, index)}{why_html(item.shares)}</div></div>")


def recommendation_cards(service: DemoService, outcome: RecommendOutcome, index: ItemIndex | None) -> str:
    if not outcome.items:
        return '<div class="eg-empty">No recommendations.</div>'
    cards = "".join(product_card(service, item, index, outcome.held_out) for item in outcome.items)
    return f'<div class="eg-cards" id="eg-results">{cards}</div>'


def basket_html(service: DemoService, keys: Sequence[str]) -> str:
    if not keys:
        return '<div class="eg-empty">Empty basket: pick a shopper above, or search and add products.</div>'
    chips = "".join(f'<span class="eg-chip" title="{_e(service.title(k))}">{n}. {_e(service.title(k)[:48])}</span>'
                    for n, k in enumerate(keys, start=1))
    return f'<div class="eg-basket">{chips}</div>'


def compare_html(service: DemoService, comparison: dict) -> str:
    """The variants side by side: each list with what it shares with ``full`` and what only it found."""
    outcomes: dict[str, RecommendOutcome] = comparison["outcomes"]
    reference = {i.key for i in outcomes["full"].items} if "full" in outcomes else None
    columns = []
    for name, outcome in outcomes.items():
        rows = []
        for item in outcome.items:
            tags = []
            if item.key == outcome.held_out:
                tags.append('<span class="eg-tag eg-held">real next purchase</span>')
            if reference is not None and name != "full":
                tags.append('<span class="eg-tag eg-shared">also in full</span>' if item.key in reference
                            else '<span class="eg-tag eg-unique">only here</span>')
            rows.append(f'<li data-key="{_e(item.key)}">{_e(item.title[:70])} {"".join(tags)}</li>')
        held = ("" if not outcome.held_out else
                f" · real next purchase at rank {outcome.held_out_rank}" if outcome.held_out_rank else
                f" · real next purchase not in the top {comparison['k']}")
        shared = ""
        if reference is not None and name != "full":
            shared = f" · {len(reference & {i.key for i in outcome.items})} of {len(outcome.items)} shared with full"
        columns.append(f'<div class="eg-col" data-variant="{_e(name)}"><h4>{_e(name)}</h4>'
                       f'<div class="eg-line">{_e(VARIANT_LINES.get(name, ""))}</div>'
                       f'<div class="eg-line">{outcome.seconds:.2f} s{held}{shared}</div><ol>{"".join(rows)}</ol></div>')
    for name, why in comparison.get("skipped", {}).items():
        columns.append(f'<div class="eg-col" data-variant="{_e(name)}"><h4>{_e(name)}</h4>'
                       f'<div class="eg-line">{_e(VARIANT_LINES.get(name, ""))}</div>'
                       f'<div class="eg-line">Not compared: {_e(why)}</div></div>')
    return f'<div class="eg-compare" id="eg-compare">{"".join(columns)}</div>'
