"""What the demo shows: real shoppers with themes, product cards, the decoding figure, Compare, warm-up."""

import re
import shutil

import numpy as np

from eager.data.dataset import InteractionData, items_frame
from eager.demo import cards
from eager.demo.figures import branches, decoding_figure
from eager.demo.service import DemoConfig, DemoService, Recommended, RecommendOutcome
from eager.demo.shoppers import history_theme, pick_shoppers
from eager.model.variants import VARIANTS
from tests.test_demo import demo_root, service  # noqa: F401  (module fixtures: tiny checkpoints of every variant)


def _shop_data() -> InteractionData:
    """Three kinds of shopper over a small catalogue with markup in a title and one product picture."""
    titles = ([f"OPI Nail Polish shade {i}" for i in range(8)] + [f"Herbal Shampoo for {['dry', 'oily', 'fine', 'curly'][i % 4]} hair {i}" for i in range(8)]
              + [f"Mixed thing {i}" for i in range(7)] + ["<script>alert(1)</script> Lipstick"])
    keys = [f"K{i:02d}" for i in range(len(titles))]
    items = items_frame(keys, title=titles, brand=["Acme"] * len(keys), categories=["Beauty, Makeup, Nails"] * len(keys))
    items["image"] = ["https://images.example/K00.jpg", "javascript:alert(1)"] + [""] * (len(keys) - 2)
    rng = np.random.default_rng(0)
    sequences = []
    for u in range(30):
        pool = [range(8), range(8, 16), range(16, 23)][u % 3]
        sequences.append(rng.permutation(list(pool))[:8])
    return InteractionData("shop", items, [f"U{u}" for u in range(30)], sequences, ("title", "brand", "categories"), "test")


def test_shoppers_are_named_for_what_most_of_their_purchases_share():
    assert history_theme(["OPI Nail Polish red", "Essie nail polish blue", "Shampoo"]) == ("nail polish", 2 / 3)
    assert history_theme(["Eau de Toilette Spray", "Cologne for men", "Parfum"])[0] == "fragrance"
    data = _shop_data()
    shoppers = pick_shoppers(data, count=5, min_items=5, sample=100)
    themes = [s.theme.lower() for s in shoppers]
    assert len(shoppers) == len(set(themes)) >= 2  # one shopper a theme
    assert any("nail polish" in t or "opi" in t for t in themes) and any("shampoo" in t for t in themes)
    for shopper in shoppers:
        titles = [data.titles[data.key_to_index()[k]].lower() for k in shopper.history]
        # the theme is what most of their items are (its words in at least half the titles)
        assert sum(all(w in t for w in shopper.theme.lower().split()) for t in titles) >= len(titles) / 2
        assert shopper.label == f"{shopper.theme} fan, {len(shopper.history)} purchases"
        user = data.user_keys.index(shopper.user)  # the history is the user's real one, test item held out
        assert shopper.history == [data.item_keys[i] for i in data.sequences[user][:-1]][-20:]
        assert shopper.held_out == data.item_keys[data.sequences[user][-1]]
    assert pick_shoppers(data, count=5, min_items=5, sample=100) == shoppers  # the same every start


def test_real_beauty_shoppers_have_themes(shared_data):
    from eager.data import load_dataset

    data = load_dataset("beauty", shared_data)
    shoppers = pick_shoppers(data, 6)
    assert len(shoppers) == 6 and len({s.user for s in shoppers}) == 6
    assert all(6 <= len(s.history) <= 20 and re.fullmatch(r".+ fan, \d+ purchases", s.label) for s in shoppers)


def test_cards_escape_markup_show_pictures_only_from_the_web_and_mark_the_held_out(tmp_path):
    data = _shop_data()
    data.save(tmp_path / "Beauty")
    svc = DemoService(DemoConfig(dataset="beauty", data_root=str(tmp_path), checkpoints=str(tmp_path / "none")))
    info = svc.item_info("K00")
    assert info == {"key": "K00", "title": "OPI Nail Polish shade 0", "brand": "Acme", "category": "Nails",
                    "image": "https://images.example/K00.jpg"}
    items = [Recommended(1, "K23", svc.title("K23"), "<a_1>", -0.5),
             Recommended(2, "K00", svc.title("K00"), "<a_2>", -0.9,
                         [{"source": "semantic", "depth": 1, "prefix": "<a_2>", "key": "K01", "title": "OPI <b>x</b>"}]),
             Recommended(3, "K01", svc.title("K01"), "<a_3>", -1.2)]
    outcome = RecommendOutcome("full", ["K01"], items, [], 0.1, held_out="K00", held_out_rank=2)
    page = cards.recommendation_cards(svc, outcome, None)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Lipstick" in page
    assert len(re.findall(r'class="eg-card[ "]', page)) == 3 and page.count("eg-hit") == 1
    assert re.search(r'eg-hit" data-key="K00"', page) and "their real next purchase" in page
    assert page.count("<img ") == 1 and 'src="https://images.example/K00.jpg"' in page  # K01's javascript: is not
    assert "OPI &lt;b&gt;x&lt;/b&gt;" in page and "Acme · Nails" in page
    basket = cards.basket_html(svc, ["K23", "K00"])
    assert "<script>" not in basket and basket.count("eg-chip") == 2
    assert "Empty basket" in cards.basket_html(svc, [])


def test_compare_marks_what_each_variant_shares_with_full():
    def outcome(name, keys, held=None, rank=None):
        return RecommendOutcome(name, [], [Recommended(r, k, f"title {k}", "", -1.0) for r, k in enumerate(keys, 1)],
                                [], 0.25, held_out=held, held_out_rank=rank)

    comparison = {"k": 3, "outcomes": {"full": outcome("full", ["A", "B", "C"], "C", 3),
                                       "wo_gct": outcome("wo_gct", ["A", "X", "Y"], "C", None)},
                  "skipped": {"wo_dki": "no checkpoint at somewhere"}}
    page = cards.compare_html(None, comparison)
    columns = re.findall(r'data-variant="(\w+)"', page)
    assert columns == ["full", "wo_gct", "wo_dki"]
    wo_gct = page[page.index('data-variant="wo_gct"'):page.index('data-variant="wo_dki"')]
    assert wo_gct.count("also in full") == 1 and wo_gct.count("only here") == 2 and "1 of 3 shared with full" in wo_gct
    assert "not in the top 3" in wo_gct and "real next purchase at rank 3" in page
    assert cards.VARIANT_LINES["wo_dki"] in page and "Not compared: no checkpoint" in page
    assert set(cards.VARIANT_LINES) == set(VARIANTS)


def test_the_decoding_figure_grows_with_each_token_and_ends_at_the_products(service):  # noqa: F811
    case = service.user_case(seed=2)
    steps = []
    outcome = service.recommend(case["history"], "full", 5, on_step=steps.append)
    index = service.model("full").engine.index
    for done in range(1, len(steps) + 1):
        fig = decoding_figure(steps[:done], index, service.title)
        nodes = next(t for t in fig.data if t.marker.colorscale is not None)
        assert max(nodes.x) == done  # one more column a token
        first = branches(steps[done - 1], index, service.title)
        for branch in first:  # each branch counts exactly the products under its prefix
            assert branch.products == int((index.codes[:, : len(branch.code)] == branch.code).all(1).sum())
    final = decoding_figure(steps, index, service.title, [(i.key, i.title) for i in outcome.items])
    stars = [t for t in final.data if t.marker.symbol == "star"]
    assert len(stars) == 1 and [text.split(". ", 1)[1] for text in stars[0].text] == \
        [i.title[:34] if len(i.title) <= 34 else i.title[:33] + "…" for i in outcome.items]
    headers = [a.text for a in final.layout.annotations]
    assert headers[0] == "catalogue" and headers[-1] == "recommended" and "alive" in headers[1]


def test_warm_up_readies_every_variant_and_reports_one_that_fails(demo_root, base_dir, tmp_path):  # noqa: F811
    shutil.copytree(demo_root / "checkpoints", tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "beauty" / "wo_dki" / "stage1.safetensors").write_bytes(b"not weights")
    svc = DemoService(DemoConfig(dataset="beauty", data_root=str(demo_root / "data"),
                                 checkpoints=str(tmp_path / "checkpoints"), dtype="fp32", base=str(base_dir)))
    assert not svc.ready() and "loads on first use" in svc.status()
    assert svc.status_line() == "4 models, each loaded on first use."
    thread = svc.warm_up()
    assert svc.status_line().startswith("Warming up: ")
    thread.join(timeout=600)
    assert svc.ready() and svc.status_line() == "3 models ready; wo_dki could not be loaded (see Status)."

    assert {v for v, s in svc.warmup.items() if s == "ready"} == set(VARIANTS) - {"wo_dki"}
    assert svc.warmup["wo_dki"].startswith("failed:")
    status = svc.status()
    assert status.count(": ready (") == 3 and "`wo_dki`: failed:" in status
    assert set(svc._models) == set(VARIANTS) - {"wo_dki"}  # loaded before any visitor asked
