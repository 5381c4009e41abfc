"""The run report: built from a small fake run directory in the real file formats."""

import base64
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.offline
import pytest
from PIL import Image

from condgen_bench.reports.run_folder.records import arrays_to_bytes
from condgen_bench.reports import build_report
from condgen_bench.reports.inputs import best_row, last_evaluations, load_inputs, objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["angry", "happy", "sad"]
NAN = math.nan
ERROR_REASON = "RuntimeError: CUDA out of memory in trial_c"
BPD_REASON = "dcgan has no likelihood"


def write_png(path, rows: int, cols: int, shade: int) -> None:
    """A grid PNG of rows x cols 8-pixel cells, grayscale."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new("L", (cols * 8, rows * 8), shade)
    image.save(path, format="PNG")


def write_parquet(frame: pd.DataFrame, path) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def common(trial: str, method: str, status: str, reason: str, lr: float) -> dict:
    return {"trial_id": trial, "method": method, "config_hash": "h" + trial, "status": status, "status_reason": reason,
            "dataset": "faces", "dataset_fingerprint": "fp123", "git_commit": "abc123", "version.python": "3.11.9",
            "version.torch": "2.4.0", "config.model.lr": lr, "config.train.epochs": 3,
            "config.model.unet.channel_mult": "[1, 2, 4]", "config.sweep.metric": "sample_accuracy",
            "config.sweep.mode": "max", "config.sweep.space": json.dumps({"model.lr": [0.0005, 0.002, 0.01]}),
            "config.data.data_root": None}


def evaluation(run_dir, trial: str, epoch: int, accuracy: float, bpd: float, seconds: float) -> dict:
    grid = os.path.join("artifacts", trial, f"epoch_{epoch:04d}", "samples.png")
    write_png(os.path.join(run_dir, grid), len(CLASSES), 4, int(200 * accuracy))
    # the paired test's file: the first round(96 accuracy) of the 96 seeded samples hit their class
    hits = np.arange(96) < round(96 * accuracy)
    per_sample = os.path.join(os.path.dirname(grid), "per_sample.npz")
    with open(os.path.join(run_dir, per_sample), "wb") as f:
        f.write(arrays_to_bytes({"hit": hits, "sample_key": np.str_("seeds 0-95, reference fp123")}))
    missing = {} if not math.isnan(bpd) else {"bpd": BPD_REASON}
    return {"epoch": epoch, "step": epoch * 10, "train_seconds": 5.0 * epoch, "sample_accuracy": accuracy,
            **{f"sample_accuracy.{c}": accuracy - 0.1 * i for i, c in enumerate(CLASSES)},
            "classifier_real_accuracy": 0.97, **{f"classifier_real_accuracy.{c}": 0.93 + 0.01 * i
                                                 for i, c in enumerate(CLASSES)},
            "fid_domain": 100 * (1 - accuracy), "kid_domain": 0.025 - 0.005 * accuracy,
            "kid_domain_std": 0.004, "is_domain": 2.5, "is_domain_std": 0.1, "bpd": bpd,
            "bpd_stderr": NAN if math.isnan(bpd) else 0.05, "sample_seconds_per_image": seconds,
            "network_evaluations": 25.0, "missing": json.dumps(missing), "protocol.num_samples": 96,
            "protocol.resolution": "1x32x32",
            "protocol.sampling": json.dumps({"sampler": "ddim", "steps": 25, "eta": 0.0, "guidance": 2.0}),
            "sampling.sampler": "ddim", "sampling.steps": 25, "sampling.eta": 0.0, "sampling.guidance": 2.0,
            "sample_grid": grid, "per_sample": per_sample}


def make_run(run_dir) -> None:
    """Four trials: trial_a is best at epoch 1 but not at its last epoch; trial_b is best at the last
    evaluation (and not the first row); trial_c errored; trial_d has no likelihood."""
    os.makedirs(run_dir, exist_ok=True)
    rows = [
        {**common("trial_a", "ddpm", "completed", "", 0.0005), **evaluation(run_dir, "trial_a", 1, 0.9, 3.1, 0.01)},
        {**common("trial_a", "ddpm", "completed", "", 0.0005), **evaluation(run_dir, "trial_a", 3, 0.45, 2.9, 0.01)},
        {**common("trial_b", "ddpm", "completed", "", 0.002), **evaluation(run_dir, "trial_b", 1, 0.5, 3.0, 0.02)},
        {**common("trial_b", "ddpm", "completed", "", 0.002), **evaluation(run_dir, "trial_b", 3, 0.8, 2.7, 0.02)},
        {**common("trial_c", "ddpm", "error", ERROR_REASON, 0.01), "epoch": None,
         "missing": json.dumps({"all": ERROR_REASON})},
        {**common("trial_d", "dcgan", "completed", "", 0.002), **evaluation(run_dir, "trial_d", 3, 0.6, NAN, 0.001)},
    ]
    for row in rows:  # training FLOPs: 2e12 an epoch for ddpm, 1e12 for dcgan (the Pareto front's axis)
        if row.get("epoch"):
            row["train_flops"] = row["epoch"] * (2e12 if row["method"] == "ddpm" else 1e12)
            row["sample_gflops_per_image"] = 25 * (0.04 if row["method"] == "ddpm" else 0.001)
    write_parquet(pd.DataFrame(rows), os.path.join(run_dir, "results.parquet"))
    history = pd.DataFrame([{"trial_id": t, "epoch": e, "loss": 1.0 / e, "train_seconds": 5.0,
                             "images_per_second": 100.0} for t in ("trial_a", "trial_b", "trial_d") for e in (1, 2, 3)])
    write_parquet(history, os.path.join(run_dir, "history.parquet"))
    summary = {"name": "faces", "fingerprint": "fp123", "options": {"size": 32},
               "counts": {"train": {c: 10 + i for i, c in enumerate(CLASSES)}, "test": {c: 5 for c in CLASSES}}}
    with open(os.path.join(run_dir, "dataset_summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"name": "faces-sweep", "method": "ddpm", "sweep": {"metric": "sample_accuracy", "mode": "max"}}, f)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run dir, report path, report text) of the full fake run."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    make_run(run_dir)
    path = build_report(run_dir)
    with open(path, encoding="utf-8") as f:
        return run_dir, path, f.read()


def test_report_is_written_where_returned(run):
    run_dir, path, _ = run
    assert path == os.path.join(run_dir, "report.html")
    assert os.path.getsize(path) > 1_000_000  # plotly.js is inside


def test_report_needs_no_network(run):
    _, _, text = run
    library = plotly.offline.get_plotlyjs()
    assert text.count(library) == 1  # inline, once
    assert re.search(r"<script>\s*" + re.escape(library[:200]), text)
    # plotly.js's own code holds link targets (its logo, map attributions) that fetch nothing: check the rest.
    rest = text.replace(library, "")
    assert not re.search(r"<script[^>]*\ssrc\s*=", rest)
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "@import", "<link", "url(http"):
        assert pattern not in rest, pattern
    assert 'src="http' not in library and "<link" not in library


def test_report_content(run):
    _, _, text = run
    for name in CLASSES + ["faces-sweep", "trial_a", "trial_b", "trial_d", "abc123", "2.4.0", "fp123"]:
        assert name in text, name
    assert "data:image/png;base64," in text
    assert BPD_REASON in text
    assert ERROR_REASON in text
    assert "guidance" in text  # the sampling protocol
    assert f'title="{BPD_REASON}">—' in text  # a missing value says why
    assert "80.0%" in text and "0.0210 ± 0.0040" in text and "2.700 ± 0.050" in text  # accuracy as %, x ± s to the spread's 2 digits
    assert '"real test images"' in text and "(overall)" not in text  # per-class real accuracy row


def test_best_trial_is_best_at_last_evaluation(run):
    run_dir, _, text = run
    inputs = load_inputs(run_dir)
    obj = objective(inputs.results, inputs.config)
    last = last_evaluations(inputs.results, obj)
    assert list(last["trial_id"])[:3] == ["trial_b", "trial_d", "trial_a"]
    assert last.set_index("trial_id").loc["trial_a", "epoch"] == 3
    assert best_row(last, obj)["trial_id"] == "trial_b"
    highlighted = re.findall(r"<tr class=best>(.*?)</tr>", text)
    assert len(highlighted) == 1 and "trial_b" in highlighted[0]
    assert "best trial <b>trial_b</b>" in text


def test_command_line(tmp_path):
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    out = subprocess.run([sys.executable, "-m", "condgen_bench.reports", run_dir], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    path = out.stdout.strip().splitlines()[-1]
    assert path == os.path.join(run_dir, "report.html")
    assert os.path.exists(path)


def test_minimal_run_builds(tmp_path):
    """No bpd, no history, no dataset_summary.json, no config.json, no grids; one all-NaN metric."""
    rows = pd.DataFrame([
        {"trial_id": "x1", "method": "dcgan", "status": "completed", "status_reason": "", "config.model.lr": 0.001,
         "epoch": 2, "sample_accuracy": 0.3, "sample_accuracy.cat": 0.2, "fid_domain": NAN, "missing": "{}"},
        {"trial_id": "x2", "method": "dcgan", "status": "error", "status_reason": "boom", "config.model.lr": 0.1,
         "epoch": None, "sample_accuracy": NAN, "sample_accuracy.cat": NAN, "fid_domain": NAN, "missing": None},
    ])
    write_parquet(rows, tmp_path / "results.parquet")
    text = open(build_report(str(tmp_path)), encoding="utf-8").read()
    assert "x1" in text and "boom" in text and "cat" in text


def test_single_errored_trial_builds(tmp_path):
    rows = pd.DataFrame([{"trial_id": "only", "status": "error", "status_reason": "no GPU", "epoch": None,
                          "missing": json.dumps({"all": "no GPU"})}])
    write_parquet(rows, tmp_path / "results.parquet")
    write_parquet(pd.DataFrame(), tmp_path / "history.parquet")
    text = open(build_report(str(tmp_path)), encoding="utf-8").read()
    assert "no GPU" in text and "only" in text


def test_finalists_are_the_headline_and_the_trials_table_keeps_the_sweeps_rows(tmp_path):
    """A finalist row (the stage after the sweep, on more samples) heads the report with its CAS, FID∞ and
    intra-class FID per class; the trials table and the curves keep the sweep's rows."""
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    results = pd.read_parquet(os.path.join(run_dir, "results.parquet"))
    grid = os.path.join("finalists", "trial_b", "samples.png")
    write_png(os.path.join(run_dir, grid), len(CLASSES), 4, 99)
    finalist = {**common("trial_b", "ddpm", "completed", "", 0.002), **evaluation(run_dir, "trial_b", 3, 0.77, 2.7, 0.02),
                "stage": "finalist", "finalist_rank": 1, "protocol.num_samples": 700, "sample_grid": grid,
                "fid_inf_domain": 11.5, "cas": 0.61, "cas_real_accuracy": 0.9,
                "fid_intra_domain": 42.0, **{f"fid_intra_domain.{c}": 40.0 + i for i, c in enumerate(CLASSES)}}
    results["stage"] = "tracking"
    write_parquet(pd.concat([results, pd.DataFrame([finalist])], ignore_index=True),
                  os.path.join(run_dir, "results.parquet"))
    text = open(build_report(run_dir), encoding="utf-8").read()
    headline = text[text.index("<h2>Finalists"):text.index("<h2>All trials")]
    assert "ddpm trial_b" in headline and "61.0%" in headline and "11.5" in headline and "700" in headline
    assert "intra-class FID" in headline and "41" in headline and "mean over classes" in headline
    trials = text[text.index("<h2>All trials"):text.index("<h2>Curves")]
    assert trials.count("trial_b") == 1 and "77.0%" not in trials  # the sweep's last row, 80%
    assert "finalist <b>trial_b</b>" in text and "700 samples scored" in text
    assert "Quality against sampler settings" not in text  # no sampling sweep ran


def test_a_finalists_sampling_sweep_is_drawn_along_its_familys_cost_axis(tmp_path):
    """A finalist scored under several sampler settings (eval.sampling_sweep) gets a chart along the axis its
    family declares as the cost (models: Method.sampler_axes; DDPM's steps), a line per other swept axis."""
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    results = pd.read_parquet(os.path.join(run_dir, "results.parquet"))
    results["stage"] = "tracking"
    finalists = []
    for i, (sampler, steps) in enumerate([("ddim", 25), ("ddim", 5), ("ddim", 50), ("ddpm", 5), ("ddpm", 50)]):
        row = {**common("trial_b", "ddpm", "completed", "", 0.002),
               **evaluation(run_dir, "trial_b", 3, 0.5 + steps / 200, 2.7, 0.02), "stage": "finalist",
               "finalist_rank": 1, "sampling.sampler": sampler, "sampling.steps": steps,
               "sampling_setting": "default" if i == 0 else f"{sampler}-steps{steps}"}
        if sampler == "ddpm":
            row["sampling.eta"] = NAN  # the ancestral sampler has no eta
        finalists.append(row)
    write_parquet(pd.concat([results, pd.DataFrame(finalists)], ignore_index=True),
                  os.path.join(run_dir, "results.parquet"))
    text = open(build_report(run_dir), encoding="utf-8").read()
    section = text[text.index("Quality against sampler settings"):]
    assert "trial_b, epoch 3: sample_accuracy" in section and '"sampling steps"' in section
    assert section.count('"name":"ddim"') == 2 and section.count('"name":"ddpm"') == 2  # two metrics each


def test_the_catalog_names_every_metric_of_a_run_and_flags_a_new_one(tmp_path):
    """Each results column that measures something has an entry (spreads and per-class columns through
    their metric); a new metric without one is listed; entries are consistent."""
    from condgen_bench.reports.catalog import METRICS, lookup, uncatalogued
    from condgen_bench.reports.inputs import metric_columns

    columns = metric_columns(pd.DataFrame([evaluation(str(tmp_path), "trial_a", 1, 0.5, 3.0, 0.01)]))
    assert "sample_accuracy.angry" in columns and uncatalogued(columns) == []
    assert not [c for c in columns if c.startswith("sampling.")]  # sampler settings describe the row
    assert uncatalogued(columns + ["fid_new_extractor", "sample_accuracy_p90"]) == ["fid_new_extractor",
                                                                                  "sample_accuracy_p90"]
    assert lookup("kid_domain_std").name == "kid_domain" and lookup("fid_intra_domain.sad").name == "fid_intra_domain"
    assert lookup("bpd.angry") is None  # bits/dim is not kept per class
    assert METRICS["fid_domain"].arrow == "↓" and METRICS["sample_accuracy"].arrow == "↑"
    assert METRICS["is_domain"].high == "classes" and METRICS["aug_gain"].scaled(-0.045) == pytest.approx(-4.5)
    for metric in METRICS.values():
        assert metric.spread is None or metric.spread.startswith(metric.name + "_"), metric.name
        # a cost is better lower, or descriptive (the hardware's rates: a property of the machine, not the model)
        assert metric.kind != "cost" or metric.direction in ("min", "none"), metric.name
        # every cost is a wall-clock measurement but the counted ones, which are portable
        portable = ("network_evaluations", "train_gflops_per_image", "sample_gflops_per_image", "train_flops",
                    "train_images_seen")
        assert metric.wall_clock == (metric.kind == "cost" and metric.name not in portable), metric.name
        assert metric.portable == (metric.name in portable), metric.name  # the catalog says which travel


def make_second_run(run_dir, dataset: str) -> None:
    """make_run's trials on another dataset (as if on an exported image folder), its trial ids the same."""
    make_run(run_dir)
    results = pd.read_parquet(os.path.join(run_dir, "results.parquet"))
    results["dataset"] = dataset
    results["sample_accuracy"] = results["sample_accuracy"] * 0.5
    write_parquet(results, os.path.join(run_dir, "results.parquet"))
    with open(os.path.join(run_dir, "dataset_summary.json"), "w") as f:
        json.dump({"name": dataset, "counts": {"train": {c: 3 for c in CLASSES}}}, f)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"name": "folder-sweep", "method": "ddpm", "sweep": {"metric": "sample_accuracy", "mode": "max"}}, f)


def test_one_page_over_two_runs_on_two_datasets_has_a_leaderboard_per_dataset(tmp_path, capsys):
    from condgen_bench.reports.__main__ import main

    """python -m condgen_bench.reports RUN RUN --output FILE: a leaderboard per dataset, a row per method at
    its best configuration with labelled, directed columns and the best of each marked; each dataset's
    sections follow, with each run's sample grids."""
    first, second = str(tmp_path / "faces"), str(tmp_path / "folder")
    make_run(first)
    make_second_run(second, "folder")
    output = str(tmp_path / "both.html")
    main([first, second, "--output", output])  # python -m condgen_bench.reports, in this process
    assert capsys.readouterr().out.strip() == output and not os.path.exists(os.path.join(first, "report.html"))
    text = open(output, encoding="utf-8").read()
    board = text[text.index("<h1>Leaderboard</h1>"):text.index("<h1>Dataset")]
    faces, folder = board.split("<h2>folder</h2>")
    assert "<h2>faces</h2>" in faces
    for part, best in ((faces, "80.0%"), (folder, "40.0%")):  # trial_b's last evaluation: 0.8, halved in folder
        assert "accuracy on samples ↑" in part and "FID (domain classifier) ↓" in part and "bits/dim" in part
        rows = re.findall(r"<tr><td class=\"l\"><b>(\w+)</b>", part)
        assert rows == ["ddpm", "dcgan"], rows  # ddpm's best (trial_b) ranks first by accuracy
        assert re.search(f'<td class="top" title="the best value of the column">{best} ★', part)
        # dcgan's accuracy (0.6 vs 0.8; 0.3 vs 0.4) is beyond noise by the paired bootstrap over the 96
        # samples; its KID (0.02 ± 0.004, the same as ddpm's) within noise by the unpaired interval
        assert re.search(r'title="beyond noise from ddpm&#x27;s: difference -(20|10) \[[^]]*\] \(paired bootstrap '
                         r'over the same 96 samples', part), part
        assert re.search(r'<td class="tie" title="within noise of ddpm&#x27;s: difference \+0.001 [^"]*unpaired', part)
        assert "faces-sweep" in part or "folder-sweep" in part  # the run each row comes from
    assert "<h1>Dataset faces</h1>" in text and "<h1>Dataset folder</h1>" in text
    assert "1:trial_b" in text and "2:trial_b" in text  # the same trial ids in two runs kept apart
    assert text.count("data:image/png;base64,") >= 6  # both runs' grids found from their own folders


def test_the_finalists_table_is_labelled_from_the_catalog(run):
    _, _, text = run
    best = text[text.index("<h2>Best configuration"):text.index("<h2>All trials")]
    assert "accuracy on samples ↑" in best and "sample_accuracy" not in best.split("title=")[0]
    assert 'class="l group"' in best and "costs (times: wall clock" in best
    assert "Lower is better" in best and "sampling time per image (s/image), wall clock ↓" in best


def test_a_200_trial_run_gives_a_usable_page_under_15_mb(tmp_path):
    """200 trials, 3 evaluations each, a 30 KB sample grid each (noise: PNG cannot shrink it): the page stays
    under 15 MB (plotly once, the 24 best other trials' grids), the trials table lists all 200, sortable."""
    import numpy as np

    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    rng = np.random.default_rng(0)
    rows = []
    for t in range(200):
        trial = f"t{t:03d}"
        grid = os.path.join("artifacts", trial, "samples.png")
        os.makedirs(os.path.join(run_dir, os.path.dirname(grid)))
        Image.fromarray(rng.integers(0, 256, (168, 192), dtype=np.uint8)).save(os.path.join(run_dir, grid))
        for epoch in (1, 2, 3):
            row = {**common(trial, "ddpm" if t % 2 else "dcgan", "completed", "", float(rng.uniform(1e-4, 1e-2))),
                   **evaluation(run_dir, trial, epoch, float(rng.uniform(0.1, 0.9)), 3.0, 0.01)}
            rows.append({**row, "sample_grid": grid})
    write_parquet(pd.DataFrame(rows), os.path.join(run_dir, "results.parquet"))
    os.remove(os.path.join(run_dir, "history.parquet"))
    path = build_report(run_dir)
    size = os.path.getsize(path)
    text = open(path, encoding="utf-8").read()
    trials = text[text.index('<table class="sortable">'):]
    trials = trials[:trials.index("</table>")]
    assert trials.count("<tr") == 201  # the heading and 200 trials
    assert "(24 best of 199)" in text and "the other 175 trials&#x27; grids" in text
    assert size < 15_000_000, size
    print(f"200-trial report: {size / 1e6:.1f} MB")


@pytest.mark.parametrize("per_sample,std,verdict", [(True, 0.1, "beyond noise: the 95% interval of the difference is "
                                                                  "[12, 28] points (paired)"),
                                                     (False, 0.1, "within noise: the 95% interval of the difference is "
                                                                  "[-7.72, 47.7] points (unpaired)"),
                                                     (False, 0.02, "beyond noise")])
def test_the_summary_names_the_leader_its_margin_and_what_is_missing(tmp_path, per_sample, std, verdict):
    """Written from the figures: ddpm (trial_b, 80%) leads dcgan (trial_d, 60%) by 20 points, judged by the
    paired bootstrap over their 96 samples where the records kept them (whatever their spreads say), else
    against the two figures' spreads; FID's leader; the missing bits/dim of the GAN and why."""
    import html

    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    results = pd.read_parquet(os.path.join(run_dir, "results.parquet"))
    results["sample_accuracy_std"] = std
    if not per_sample:  # a run from before per-sample files
        results = results.drop(columns="per_sample")
    write_parquet(results, os.path.join(run_dir, "results.parquet"))
    text = html.unescape(re.search(r'<p class="summary">(.*?)</p>', open(build_report(run_dir)).read()).group(1))
    assert "ddpm leads with 80.0% against dcgan's 60.0%: a margin of 20 points, " + verdict in text, text
    assert "FID (domain classifier) (lower is better) ddpm leads with 20" in text
    assert "Missing: bits/dim for dcgan (the method has no likelihood)." in text


def test_a_configuration_run_with_several_seeds_is_one_leaderboard_row_of_mean_and_std(tmp_path):
    """trial_e repeats trial_b's configuration (ddpm, lr 0.002) with another training seed: the leaderboard
    shows one ddpm row, the mean over the two seeds ± their std, without a per-sample test (a mean has no
    samples); a noise mark against it uses the standard error std / sqrt(2)."""
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    results = pd.read_parquet(os.path.join(run_dir, "results.parquet")).assign(**{"config.train.seed": 0})
    twin = {**common("trial_e", "ddpm", "completed", "", 0.002), "config.train.seed": 1,
            **evaluation(run_dir, "trial_e", 3, 0.7, 2.8, 0.02)}
    results = pd.concat([results, pd.DataFrame([twin])], ignore_index=True)
    results["sample_accuracy_std"] = 0.02
    write_parquet(results, os.path.join(run_dir, "results.parquet"))
    text = open(build_report(run_dir), encoding="utf-8").read()
    board = text[text.index("<h1>Leaderboard</h1>"):text.index("<h1>Dataset")]
    assert "<th>seeds</th>" in board
    row = re.search(r"<tr><td class=\"l\"><b>ddpm</b></td>(.*?)</tr>", board).group(1)
    assert '<td class="l">trial_b, trial_e</td>' in row and "<td>2</td>" in row
    assert "75.0% ± 7.1% ★" in row  # mean of 80% and 70%, their std 7.07 points
    # dcgan's 60% ± 2%: 15 points behind, the interval ±1.96 × sqrt(5² + 2²) = ±10.6 points
    assert re.search(r"beyond noise from ddpm&#x27;s: difference -15 \[-25.6, -4.45\] \(unpaired", board), board


def test_the_header_counts_training_runs_where_budgets_were_read_off_them():
    from condgen_bench.reports.sections import runs_note

    trials = pd.DataFrame({"trial_id": ["a@2", "a", "b@2", "b"], "budget_of": ["a", None, "b", None]})
    assert runs_note(trials) == " (2 training runs, the smaller epoch budgets read off them)"
    assert runs_note(trials.drop(columns="budget_of")) == "" and runs_note(trials.iloc[[1, 3]]) == ""


def test_hardware_use_is_the_counted_flops_times_the_rate_and_its_share_of_the_gpus_peak():
    from condgen_bench.harness.results import hardware_use

    progress = pd.DataFrame({"epoch": [1, 2, 3], "images_per_second": [1000.0, 2000.0, 500.0],
                             "device": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "cpu"]})
    used = hardware_use(progress, gflops=10.0)
    assert used["train_tflops"].tolist() == [10.0, 20.0, 5.0]
    assert used["train_peak_fraction"].iloc[:2].tolist() == pytest.approx([10 / 989, 20 / 989])
    assert math.isnan(used["train_peak_fraction"].iloc[2])  # a CPU has no peak in the table


def test_a_network_whose_flops_cannot_be_counted_is_a_missing_figure_with_its_reason(monkeypatch):
    from condgen_bench.datasets import FER_EMOTIONS, DatasetSpec
    from condgen_bench.harness import results

    def uncountable(*args):
        raise RuntimeError("no meta kernel for this op")

    monkeypatch.setattr(results, "training_flops_per_image", uncountable)
    results._gflops_per_image.cache_clear()
    try:
        value, why = results._gflops_per_image("dcgan", "{}", DatasetSpec("x", 1, 16, FER_EMOTIONS, "x"), 8)
    finally:
        results._gflops_per_image.cache_clear()
    assert math.isnan(value) and "could not be counted" in why and "no meta kernel" in why


def test_text_from_the_run_is_escaped_and_only_its_own_files_are_embedded(tmp_path):
    """A run folder someone else wrote: a class named like markup, markup in a status reason and the config,
    and record files named outside the run (an absolute path, one climbing out with ".."). The markup appears
    as text; the outside files are not read, and the report names them."""
    evil = "<img src=x onerror=alert(1)>"
    outside = tmp_path / "outside"
    write_png(str(outside / "secret.png"), 1, 1, 255)
    run_dir = tmp_path / "run"
    grid = os.path.join("artifacts", "t1", "samples.png")
    write_png(str(run_dir / grid), 1, 4, 90)
    rows = pd.DataFrame([
        {"trial_id": "t1", "method": "ddpm", "status": "completed", "status_reason": "", "epoch": 1,
         "sample_accuracy": 0.5, f"sample_accuracy.{evil}": 0.5, "missing": "{}", "sample_grid": grid,
         "config.model.lr": 0.001},
        {"trial_id": "t2", "method": "ddpm", "status": "error", "status_reason": f"failed: {evil}", "epoch": 1,
         "sample_accuracy": 0.4, f"sample_accuracy.{evil}": 0.4, "missing": "{}",
         "sample_grid": str(outside / "secret.png"), "config.model.lr": 0.002},
        {"trial_id": "t3", "method": "ddpm", "status": "completed", "status_reason": "", "epoch": 1,
         "sample_accuracy": 0.3, f"sample_accuracy.{evil}": 0.3, "missing": "{}",
         "sample_grid": "../outside/secret.png", "config.model.lr": 0.003},
    ])
    write_parquet(rows, run_dir / "results.parquet")
    with open(run_dir / "config.json", "w") as f:
        json.dump({"name": f"sweep {evil}", "sweep": {"metric": "sample_accuracy", "mode": "max"}}, f)
    text = open(build_report(str(run_dir)), encoding="utf-8").read()
    assert evil not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    secret = base64.b64encode((outside / "secret.png").read_bytes()).decode()
    assert text.count('<div class="gridwrap">') == 1 and secret not in text  # the run's own grid only
    assert "not embedded: 2 record files" in text
    assert str(outside / "secret.png") in text and "../outside/secret.png" in text
