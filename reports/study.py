"""The augmentation study in the report: for each finalist that ran it (eval.augment_study; the harness writes
its arms beside the finalist's record, layout.AUGMENT_STUDY), a verdict sentence, the gain against the ratio
of generated to real images per selection rule (without and with ordinary classifier augmentation), the
arms' table, per-class recall, and the real images above the selected generated ones; where several families
ran it, first their curves in one figure (each family's best finalist at its best selection rule). The
leaderboard carries each family's headline (study_best_gain)."""

from __future__ import annotations

import json
from html import escape
from statistics import NormalDist

import plotly.graph_objects as go

from condgen_bench.reports.blocks import finalists_with, fmt, grid_image, note, table
from condgen_bench.reports.charts import PALETTE, to_fragment
from condgen_bench.reports.inputs import is_missing
from condgen_bench.reports.run_folder import layout, storage

Z = 1.959964  # the 95% interval of a gain: ± Z standard errors (harness/evaluation/augment_study.py paired_gain)


def points(value: float) -> str:
    """A gain as signed points: 0.031 -> "+3.1"."""
    return f"{value * 100:+.1f}"


def interval(row: dict) -> str:
    """An arm's gain with its 95% interval: "+3.1 [+0.4, +5.8]"."""
    return f"{points(row['gain'])} [{points(row['gain_low'])}, {points(row['gain_high'])}]"


def verdict(rows: list[dict]) -> str:
    """One sentence: did any arm with generated images beat real-only beyond noise, and which was best."""
    mixed = [r for r in rows if r["kind"] == "mixed"]
    if not mixed:
        return "no arm mixed generated images with real ones"
    best = max(mixed, key=lambda r: r["gain"])
    winners = [r for r in rows if r["kind"] != "real" and r["beyond_noise"] and r["gain"] > 0]
    losers = [r for r in mixed if r["beyond_noise"] and r["gain"] < 0]
    if winners:
        top = max(winners, key=lambda r: r["gain"])
        text = (f"{len(winners)} setting{'s' if len(winners) != 1 else ''} beat real-only beyond noise; the best, "
                f"{top['arm']}, by {interval(top)} points (95% interval).")
    else:
        text = (f"No setting beat real-only beyond noise: the best, {best['arm']}, gained {interval(best)} points "
                "(95% interval), which holds 0.")
    if losers:
        text += f" {len(losers)} of {len(mixed)} mixed settings were worse than real-only beyond noise."
    compared = [r for r in rows if r["kind"] != "real"]
    top = max(compared, key=lambda r: r["gain"])
    if len(compared) > 1 and top["gain_se"] > 0:  # the best of many is the luckiest of them too
        threshold = NormalDist().inv_cdf(1 - 0.025 / len(compared))
        z = top["gain"] / top["gain_se"]
        text += (f" Picking the best of {len(compared)} settings favours luck: its gain is {z:.1f} standard errors "
                 f"from 0, {'above' if z > threshold else 'below'} the {threshold:.2f} that {len(compared)} "
                 "comparisons at 95% ask for (Bonferroni).")
    return text


def study_curve(rows: list[dict], title: str) -> str:
    """Gain (points, with its 95% interval) against generated images per real image, one line per selection
    rule and classifier-augmentation setting (dashed: with)."""
    fig = go.Figure()
    lines = sorted({(r["selection"], r["augment"]) for r in rows if r["kind"] == "mixed"}, key=str)
    selections = sorted({selection for selection, _ in lines})
    for selection, augment in lines:
        arm = sorted((r for r in rows if r["kind"] == "mixed" and (r["selection"], r["augment"]) == (selection, augment)),
                     key=lambda r: r["ratio"])
        fig.add_trace(go.Scatter(
            x=[r["ratio"] for r in arm], y=[r["gain"] * 100 for r in arm], mode="lines+markers",
            name=f"{selection}{' + classifier augmentation' if augment else ''}",
            line=dict(color=PALETTE[selections.index(selection) % len(PALETTE)], dash="dash" if augment else "solid"),
            error_y=dict(type="data", array=[Z * r["gain_se"] * 100 for r in arm], visible=True)))
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    fig.update_layout(title=title, xaxis_title="generated images per real image", yaxis_title="gain over real-only (points)")
    fig.update_xaxes(type="log")
    return to_fragment(fig)


def headline_selection(rows: list[dict]) -> str:
    """The selection rule of the study's best mixed arm (its headline)."""
    return max((r for r in rows if r["kind"] == "mixed"), key=lambda r: r["gain"])["selection"]


def family_curves(studies: dict[str, list[dict]]) -> str:
    """Gain (points, with its 95% interval) against generated images per real image across families: per
    family ({label: its study's rows}), the selection rule of its headline without (solid) and with (dashed)
    classifier augmentation, one colour a family."""
    fig = go.Figure()
    for i, (label, rows) in enumerate(studies.items()):
        selection = headline_selection(rows)
        for augment in (False, True):
            arm = sorted((r for r in rows if r["kind"] == "mixed" and r["selection"] == selection
                          and r["augment"] == augment), key=lambda r: r["ratio"])
            if not arm:
                continue
            fig.add_trace(go.Scatter(
                x=[r["ratio"] for r in arm], y=[r["gain"] * 100 for r in arm], mode="lines+markers",
                name=f"{label}, {selection}{' + classifier augmentation' if augment else ''}",
                line=dict(color=PALETTE[i % len(PALETTE)], dash="dash" if augment else "solid"),
                error_y=dict(type="data", array=[Z * r["gain_se"] * 100 for r in arm], visible=True)))
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    fig.update_layout(title="gain against ratio, by family (each at its best selection rule)",
                      xaxis_title="generated images per real image", yaxis_title="gain over real-only (points)")
    fig.update_xaxes(type="log")
    return to_fragment(fig)


def arms_table(rows: list[dict]) -> str:
    """Every arm: its training images, accuracy ± standard error, and gain with its interval."""
    lines = []
    for r in rows:
        gain = "—" if r["kind"] == "real" else escape(interval(r)) + (" *" if r["beyond_noise"] else "")
        cells = [escape(r["arm"]), fmt(r["train_images"]), fmt(r["generated_images"]),
                 f"{r['accuracy'] * 100:.1f} ± {r['accuracy_se'] * 100:.1f}", gain]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return table(["arm", "training images", "of them generated", "test accuracy (%)",
                  "gain over real-only (points, 95% interval; * beyond noise)"], lines, sortable=True)


def recall_table(rows: list[dict], classes: list[str]) -> str:
    """Per-class recall (%) of the real arms and of the best mixed arm of each augmentation setting."""
    shown = [r for r in rows if r["kind"] == "real"]
    for augment in (False, True):
        mixed = [r for r in rows if r["kind"] == "mixed" and r["augment"] == augment]
        if mixed:
            shown.append(max(mixed, key=lambda r: r["gain"]))
    lines = ["<tr><td>" + escape(r["arm"]) + "</td>" + "".join(f"<td>{fmt(v * 100) if v == v else '—'}</td>"
                                                               for v in r["recall"]) + "</tr>" for r in shown]
    names = classes if len(classes) == len(shown[0]["recall"]) else [str(i) for i in range(len(shown[0]["recall"]))]
    return table(["arm (recall, %)", *names], lines)


def augment_study_section(view) -> str:
    """The study of each finalist that ran it (view: reports/sections.py DatasetView); "" where none did."""
    shown = finalists_with(view.finalist_rows(), "augment_study")
    if shown.empty:
        return ""
    out = ("<h2>Augmentation study</h2>" + note(
        "does a classifier trained on the generator's own K-shot set generalise better with generated images "
        "added? Every arm: the same classifier recipe, seeds and real test images; a gain is paired with the "
        "real-only arm of the same classifier-augmentation setting, so what ordinary augmentation gives is not "
        "counted as the generator's"))
    studies, body = {}, ""
    for _, r in shown.iterrows():
        path = layout.record_file(view.inputs.run_dir, r["augment_study"])
        if not storage.exists(path):
            body += note(f"augmentation study {r['augment_study']} not found")
            continue
        rows = json.loads(storage.read_bytes(path))
        title = f"{r.get('method')} {r['trial_id']}"
        studies.setdefault(str(r.get("method")), rows)  # a family's first finalist: its best by the sweep metric
        pairing = r.get("protocol.study_pairing")
        body += (f"<h3>{escape(title)}</h3><p><b>{escape(verdict(rows))}</b></p>"
                + (note(f"pairing: {pairing}") if not is_missing(pairing) else "")
                + study_curve(rows, f"{title}: gain against ratio") + arms_table(rows)
                + "<h4>Per-class recall</h4>" + recall_table(rows, view.classes))
        if not is_missing(r.get("augment_study_grid")):
            labels = [f"{c} {side}" for c in view.classes for side in ("real", "generated")]
            body += ("<h4>Real images and the best setting's generated ones</h4>"
                     + grid_image(view.inputs.run_dir, r["augment_study_grid"], labels, 24))
    if len(studies) > 1:
        out += family_curves(studies)
    return out + body
