"""EAGER-LLM demo: build a purchase history, watch item codes decode into products, compare ablations.

Layout and wiring only; everything it does is in ``eager.demo`` (which the tests call directly).
Run: ``./run demo`` (sets up on first use), ``python app.py``, or as a Hugging Face Space. Settings:
$EAGER_DEMO_DATASET (default beauty), $EAGER_DATA_ROOT (unset: the dataset is downloaded and prepared
under ./data on first start), $EAGER_CHECKPOINTS (default ./checkpoints).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import gradio as gr

from eager.decoding.engine import BeamStep
from eager.demo import cards, views
from eager.demo.figures import decoding_figure
from eager.demo.service import DemoError, DemoService, RecommendOutcome
from eager.model.variants import VARIANTS

try:  # ZeroGPU on Hugging Face Spaces: model calls borrow a GPU; elsewhere a no-op
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

EMPTY_STATE = {"history": [], "held_out": None, "user": None}
# Page-wide style, given to launch() (Gradio 6 takes CSS there): on a phone the decoding figure keeps
# a readable width and scrolls sideways inside its own box rather than squeezing six columns into 390 px.
LAUNCH_OPTIONS = {"css": "#decoding{overflow-x:auto} #decoding .js-plotly-plot{min-width:760px}"}
SHOPPERS = 6  # real shoppers on the first screen


def _fail(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def build_demo(service: DemoService) -> gr.Blocks:
    def shopper_buttons():
        try:
            return service.shoppers(SHOPPERS)
        except DemoError:
            return []

    def basket_view(state):
        return cards.basket_html(service, state["history"]), _user_line(state)

    def _user_line(state):
        if state["user"]:
            return (f"**Real shopper {state['user']}** ({len(state['history'])} purchases). Their real next purchase "
                    f"is kept aside: “{service.title(state['held_out'])}”. Will the model find it?")
        return (f"**Your basket** ({len(state['history'])} products)." if state["history"]
                else "Pick a shopper, or build a basket of your own.")

    def do_search(query):
        try:
            choices = service.search(query, limit=12)
        except DemoError as err:
            raise _fail(err) from None
        if not (query or "").strip():
            return gr.update(choices=[], value=None), ""
        note = (f"{len(choices)} matches: click one to add it." if choices
                else "No product title holds all of those words.")
        return gr.update(choices=choices, value=None), note

    def add_item(key, state):
        if not key:
            return gr.update(), state, *basket_view(state)
        state = {**state, "history": [*state["history"], key], "user": None, "held_out": None}
        return gr.update(value=None), state, *basket_view(state)

    def remove_last(state):
        state = {**state, "history": state["history"][:-1], "user": None, "held_out": None}
        return state, *basket_view(state)

    def clear(_state):
        return dict(EMPTY_STATE), *basket_view(EMPTY_STATE)

    def load_user(user_id, state):
        try:
            case = service.user_case(user=user_id or None, seed=None)
        except DemoError as err:
            raise _fail(err) from None
        state = {"history": case["history"], "held_out": case["held_out"], "user": case["user"]}
        return state, *basket_view(state)

    @gpu
    def recommend_live(state, variant, k, hide_history=True) -> Iterator[tuple]:
        steps_md: list[str] = []
        try:
            service.check_history(state["history"])  # said at once, before any model work
            yield "Getting the model ready…", None, "", gr.update(), ""
            index = service.model(variant).engine.index
            steps: list[BeamStep] = []
            for event in service.recommend_stream(state["history"], variant, int(k), state["held_out"], bool(hide_history)):
                if isinstance(event, BeamStep):
                    steps.append(event)
                    steps_md.append(views.step_markdown(event, index, service))
                    yield (f"Decoding token {event.level + 1} of {index.levels}…",
                           decoding_figure(steps, index, service.title), "", gr.update(), "\n\n".join(steps_md))
                elif isinstance(event, RecommendOutcome):
                    figure = decoding_figure(steps, index, service.title, [(i.key, i.title) for i in event.items[:8]])
                    yield (views.outcome_markdown(event), figure, cards.recommendation_cards(service, event, index),
                           views.results_table(event), "\n\n".join(steps_md))
        except DemoError as err:
            raise _fail(err) from None

    @gpu
    def compare_view(state, chosen, k, hide_history=True):
        try:
            comparison = service.compare(state["history"], chosen or None, int(k), state["held_out"], bool(hide_history))
        except DemoError as err:
            raise _fail(err) from None
        return cards.compare_html(service, comparison), *views.compare_tables(comparison)

    def lookup(key):
        try:
            found = service.lookup(key)
        except DemoError as err:
            raise _fail(err) from None
        import pandas as pd

        return (f"**{found['title']}** · `{found['key']}` · code `{found['code']}` "
                f"(levels: {', '.join(found['level_sources'])})", pd.DataFrame(found["nearest"]))

    def tree(key):
        from eager.index.figures import code_tree_figure

        try:
            highlight = [key.strip()] if key and key.strip() else []
            return code_tree_figure(service.index(), service.data, highlight=highlight, merge_collapsed=True)
        except (DemoError, KeyError) as err:
            raise _fail(err) from None

    @gpu
    def probe_code(code):
        try:
            out = [service.code_to_title(code, v) for v in service.probe_variants()]
        except DemoError as err:
            raise _fail(err) from None
        if not out:
            raise gr.Error("Needs the full or wo_aat checkpoint.")
        lines = [f"Real title: **{out[0]['title']}** (`{out[0]['code']}`)"]
        lines += [f"- `{o['variant']}` writes: “{o['generated']}” ({o['seconds']} s)" for o in out]
        return "\n".join(lines)

    @gpu
    def probe_title(title):
        try:
            out = [service.title_to_code(title, v) for v in service.probe_variants()]
        except DemoError as err:
            raise _fail(err) from None
        blocks = [f"**`{o['variant']}`** ({o['seconds']} s):\n\n" +
                  "\n".join(f"- `{c['code']}` {c['score']:.2f} → {c['title'][:70]}" for c in o["codes"]) for o in out]
        return "\n\n".join(blocks) or "Needs the full or wo_aat checkpoint."

    def card():
        import json

        info = service.model_card()
        return views.model_card_markdown(info), json.dumps(info["configs"], indent=1)[:20000]

    def status_tick():
        return service.status(), service.status_line(), gr.Timer(active=not service.ready() and bool(service.warmup))

    def recommend_api(history: list[str], variant: str = "full", k: int = 10, hide_history: bool = True) -> dict:
        """Top-k items for a history of item keys (oldest first) from one variant; hide_history=False
        keeps items the history already holds (the model's raw list, as the evaluation scores it)."""
        try:
            outcome = service.recommend(history, variant, k, hide_history=bool(hide_history))
        except DemoError as err:
            raise _fail(err) from None
        return {"variant": variant, "seconds": round(outcome.seconds, 3), "notes": outcome.notes,
                "hid_history": outcome.hid_history,
                "items": [{"rank": i.rank, "key": i.key, "title": i.title, "code": i.code, "score": round(i.score, 4)}
                          for i in outcome.items]}

    def compare_api(history: list[str], variants: list[str] | None = None, k: int = 10,
                    hide_history: bool = True) -> dict:
        """Several variants' top-k on one history (default: every shipped variant), with their latency."""
        try:
            comparison = service.compare(history, variants or None, k, hide_history=bool(hide_history))
        except DemoError as err:
            raise _fail(err) from None
        return {"k": comparison["k"], "skipped": comparison["skipped"], "overlap": comparison["overlap"],
                "variants": {name: {"seconds": round(o.seconds, 3), "items": [i.key for i in o.items]}
                             for name, o in comparison["outcomes"].items()}}

    def search_api(query: str) -> list[dict]:
        """Catalogue items whose title holds every word of the query."""
        try:
            return [{"key": key, "label": label} for label, key in service.search(query)]
        except DemoError as err:
            raise _fail(err) from None

    shoppers = shopper_buttons()
    with gr.Blocks(title="EAGER-LLM demo") as demo:
        state = gr.State(dict(EMPTY_STATE))
        gr.Markdown("# EAGER-LLM: a language model that recommends by writing product codes\n"
                    "Every product has a four-token code: the first two say **what it is** (from its text), the last "
                    "two say **who buys it with what** (from shopping behaviour). From a basket, a 135M model writes "
                    "the next product's code one token at a time; each token narrows the catalogue, and every answer "
                    "is a real product.")
        status_line = gr.Markdown(service.status_line(), elem_id="status-line")
        with gr.Accordion("Status", open=False):
            status = gr.Markdown(elem_id="status")
        with gr.Tab("Recommend"):
            gr.Markdown("#### Start from a real shopper")
            with gr.Row(elem_id="shoppers"):
                shopper_btns = [gr.Button(s.label, size="sm", elem_id=f"shopper-{n}", elem_classes="eg-shopper")
                                for n, s in enumerate(shoppers)]
                if not shoppers:
                    gr.Markdown("No shoppers to show: the dataset is missing (see Status).")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    gr.Markdown("#### …or build your own basket")
                    query = gr.Textbox(label="Search products", placeholder="type e.g. nail polish", elem_id="search")
                    found_note = gr.Markdown(elem_id="search-note")
                    found = gr.Radio(label="Matches (click to add)", choices=[], elem_id="matches")
                    with gr.Row():
                        undo = gr.Button("Remove last", size="sm", elem_id="undo")
                        reset = gr.Button("Clear", size="sm", elem_id="clear")
                    with gr.Accordion("Load a test user by id", open=False):
                        user_id = gr.Textbox(label="User id (empty: a random one)", elem_id="user-id")
                        load = gr.Button("Load user", elem_id="load-user", size="sm")
                with gr.Column(scale=2, min_width=300):
                    user_line = gr.Markdown(_user_line(EMPTY_STATE), elem_id="user-line")
                    basket = gr.HTML(cards.basket_html(service, []), elem_id="history", css_template=cards.CSS)
                    with gr.Row():
                        variant = gr.Dropdown(list(VARIANTS), value="full", label="Model", min_width=120)
                        k = gr.Slider(1, service.config.max_k, value=10, step=1, label="How many", min_width=160)
                    hide = gr.Checkbox(value=True, label="Leave out what's in the basket", elem_id="hide-history")
                    go = gr.Button("Recommend", variant="primary", elem_id="recommend")
            summary = gr.Markdown(elem_id="summary")
            decoding = gr.Plot(label="The four tokens narrowing the catalogue", elem_id="decoding")
            results = gr.HTML(elem_id="results", css_template=cards.CSS)
            with gr.Accordion("Decoding trace and scores (for researchers)", open=False):
                steps = gr.Markdown(elem_id="steps")
                results_table = gr.Dataframe(headers=views.RESULT_COLUMNS, interactive=False, elem_id="results-table")
        with gr.Tab("Compare variants"):
            gr.Markdown("The four trained variants on the same basket: marked are the products each shares with "
                        "`full` and the ones only it found.")
            # Ticked: the variants that have checkpoints (all of them when none do, so Compare explains).
            chosen = gr.CheckboxGroup(list(VARIANTS), value=service.available_variants() or list(VARIANTS),
                                      label="Variants")
            run_compare = gr.Button("Compare on this basket", variant="primary", elem_id="compare")
            compare_grid = gr.HTML(elem_id="compare-grid", css_template=cards.CSS)
            with gr.Accordion("As tables", open=False):
                compare_summary = gr.Dataframe(label="Latency and held-out rank", interactive=False,
                                               elem_id="compare-summary")
                compare_lists = gr.Dataframe(label="Top-k side by side", interactive=False)
                compare_overlap = gr.Dataframe(label="Items shared between top-k lists", interactive=False)
        with gr.Tab("Explore the index"):
            item_key = gr.Textbox(label="Item key", elem_id="lookup-key")
            with gr.Row():
                look = gr.Button("Look up")
                draw = gr.Button("Draw the code tree around it")
            looked = gr.Markdown()
            nearest = gr.Dataframe(label="Nearest items in code (longest shared prefix)", interactive=False)
            index_plot = gr.Plot()
        with gr.Tab("Language probe"):
            gr.Markdown("What annealing trades: `full` (tuned on recommendation last) against `w/o AAT`.")
            code_in = gr.Textbox(label="Item code or key → title (index2item)")
            code_go = gr.Button("Generate the title")
            code_out = gr.Markdown()
            title_in = gr.Textbox(label="Title → item code (item2index)")
            title_go = gr.Button("Generate the code")
            title_out = gr.Markdown()
        with gr.Tab("Model card"):
            card_md = gr.Markdown()
            card_json = gr.Code(language="json", label="Training configs", max_lines=40)
        ticker = gr.Timer(2.0, active=bool(service.warmup) and not service.ready())

        basket_out = [basket, user_line]
        recommend_out = [summary, decoding, results, results_table, steps]
        refresh = dict(fn=lambda: (service.status(), service.status_line()), inputs=None, outputs=[status, status_line],
                       api_visibility="private")
        query.input(do_search, query, [found, found_note], api_visibility="private", trigger_mode="always_last")
        query.submit(do_search, query, [found, found_note], api_visibility="private")
        found.input(add_item, [found, state], [found, state, *basket_out], api_visibility="private")
        undo.click(remove_last, state, [state, *basket_out], api_visibility="private")
        reset.click(clear, state, [state, *basket_out], api_visibility="private")
        load.click(load_user, [user_id, state], [state, *basket_out], api_visibility="private")
        for button, shopper in zip(shopper_btns, shoppers):
            button.click(load_user, [gr.State(shopper.user), state], [state, *basket_out], api_visibility="private").then(
                recommend_live, [state, variant, k, hide], recommend_out, api_visibility="private",
                concurrency_limit=2, concurrency_id="recommend").then(**refresh)
        go.click(recommend_live, [state, variant, k, hide], recommend_out, api_visibility="private",
                 concurrency_limit=2, concurrency_id="recommend").then(**refresh)
        run_compare.click(compare_view, [state, chosen, k, hide], [compare_grid, compare_lists, compare_overlap,
                                                              compare_summary],
                          api_visibility="private", concurrency_limit=1).then(**refresh)
        look.click(lookup, item_key, [looked, nearest], api_visibility="private")
        draw.click(tree, item_key, index_plot, api_visibility="private")
        code_go.click(probe_code, code_in, code_out, api_visibility="private", concurrency_limit=1)
        title_go.click(probe_title, title_in, title_out, api_visibility="private", concurrency_limit=1)
        ticker.tick(status_tick, None, [status, status_line, ticker], api_visibility="private")
        demo.load(lambda: (service.status(), service.status_line(), *card()), None,
                  [status, status_line, card_md, card_json], api_visibility="private")
        gr.api(recommend_api, api_name="recommend", concurrency_limit=2)
        gr.api(compare_api, api_name="compare", concurrency_limit=1)
        gr.api(search_api, api_name="search")
    return demo


def main() -> None:
    import sys

    from eager.demo.setup import ensure_demo_data

    try:  # without its data the demo still starts, and says what is missing and what to do
        print(f"eager demo: {ensure_demo_data()}", file=sys.stderr)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"eager demo: {err}", file=sys.stderr)
    service = DemoService()
    service.warm_up()  # every shipped variant loads in the background while the app already serves
    demo = build_demo(service)
    demo.queue(max_size=int(os.environ.get("EAGER_QUEUE_SIZE", "32")))
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
