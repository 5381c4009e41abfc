"""Fair comparisons at equal compute: the costs that travel (images seen, training FLOPs, device-seconds,
sampling FLOPs per image), the Pareto front of quality against them in the report with the equal-compute
leaderboard, and several objectives at once (sweep.objectives: the front recorded, the finalists drawn from
it, ASHA and PBT refusing them)."""

import json
import math

import pandas as pd
import pytest

from condgen_bench.harness.config import ExperimentConfig, SweepConfig, apply_overrides
from condgen_bench.harness.finalists import select_finalists
from condgen_bench.harness.front import front_rows, mark_front, pareto_mask, spread
from condgen_bench.harness.results import hardware_use, training_costs
from condgen_bench.models.flops import FlopCounter, sampling_flops_per_image
from condgen_bench.reports.inputs import Objective
from condgen_bench.reports.pareto import compute_budget, equal_compute, equal_compute_table, leader_sentence, on_front


# ---------------------------------------------------------------- costs that travel


def test_training_costs_sum_the_images_flops_and_device_seconds_by_kind():
    """Two epochs on one CPU worker, then one on two GPU workers: images from the worker's count (steps x
    batch x ranks) where it reported one, else images/s x seconds; FLOPs = images x GFLOPs per image;
    device-seconds = seconds x workers, split by device kind."""
    progress = pd.DataFrame([
        {"epoch": 1, "images_per_second": 100.0, "train_seconds": 10.0, "device": "cpu", "train_images_seen": 1024},
        {"epoch": 2, "images_per_second": 100.0, "train_seconds": 10.0, "device": "cpu", "train_images_seen": 2048},
        {"epoch": 3, "images_per_second": 400.0, "train_seconds": 5.0, "device": "NVIDIA H200",
         "cluster": {"workers_per_trial": 2}, "train_images_seen": 4096},
    ])
    costs = training_costs(hardware_use(progress, gflops=0.5, workers=1))
    assert costs["images_seen"].tolist() == [1024, 2048, 4096]
    assert costs["flops"].tolist() == pytest.approx([0.512e12, 1.024e12, 2.048e12])
    assert costs["device_seconds"].tolist() == [10.0, 20.0, 30.0]
    assert json.loads(costs["device_seconds_by_kind"].iloc[-1]) == {"NVIDIA H200": 10.0, "cpu": 20.0}
    older = training_costs(hardware_use(progress.drop(columns="train_images_seen"), gflops=0.5, workers=1))
    assert older["images_seen"].tolist() == [1000.0, 2000.0, 4000.0]  # a run from before the worker counted


def test_sampling_flops_count_every_network_call_of_the_sampler():
    """DDPM's sampler: FLOPs per image grow by the same amount with each step (the network's pass), about
    twice over with guidance (two passes a step), and are counted once per setting in a process."""
    from families import tiny_method

    method, _ = tiny_method("ddpm")
    flops = {steps: sampling_flops_per_image(method, {"steps": steps, "guidance": 1.0}) for steps in (2, 4, 6)}
    assert flops[2] > 0 and flops[6] - flops[4] == flops[4] - flops[2] > 0
    guided = sampling_flops_per_image(method, {"steps": 2, "guidance": 3.0})
    assert guided == pytest.approx(2 * flops[2], rel=0.05)
    with FlopCounter() as counter:  # cached: nothing runs the second time
        sampling_flops_per_image(method, {"steps": 2, "guidance": 1.0})
    assert counter.flops == 0


# ---------------------------------------------------------------- the front in the report


def test_the_front_keeps_the_points_nothing_beats_on_both():
    cost = pd.Series([1.0, 2.0, 2.0, 3.0, 4.0, math.nan])
    accuracy = pd.Series([0.5, 0.4, 0.7, 0.7, 0.9, 1.0])  # 0.4 at cost 2 and 0.7 at cost 3 are dominated
    assert on_front(cost, accuracy, "max").tolist() == [True, False, True, False, True, False]
    fid = pd.Series([30.0, 20.0, 25.0, 10.0, 10.0, 1.0])
    assert on_front(cost, fid, "min").tolist() == [True, True, False, True, False, False]


def points(rows):
    return pd.DataFrame([{"method": m, "trial_id": t, "epoch": e, "train_flops": f, "sample_accuracy": a,
                          "stage": "tracking"} for m, t, e, f, a in rows])


def test_equal_compute_takes_each_familys_best_within_the_smallest_familys_largest_budget():
    """dcgan trained to 2e12 FLOPs, ddpm to 8e12: at 2e12 dcgan leads (0.6 against ddpm's 0.5 there), while
    ddpm leads without the limit (0.8 at 8e12); report.compute_budget sets another budget."""
    frame = points([("ddpm", "d1", 1, 1e12, 0.3), ("ddpm", "d1", 2, 2e12, 0.5), ("ddpm", "d1", 8, 8e12, 0.8),
                    ("dcgan", "g1", 1, 1e12, 0.4), ("dcgan", "g1", 2, 2e12, 0.6)])
    obj = Objective("sample_accuracy", "max")
    assert compute_budget(frame, None) == (2e12, "the smallest family's largest budget (dcgan)")
    rows = equal_compute(frame, obj, 2e12)
    assert rows[["method", "sample_accuracy"]].values.tolist() == [["dcgan", 0.6], ["ddpm", 0.5]]
    text, _, budget = leader_sentence(frame, obj, None)
    assert budget == 2e12 and text.startswith("At equal training compute (at most 2e+12 FLOPs")
    assert "dcgan leads on accuracy on samples with 60.0%" in text and "without the limit ddpm leads with 80.0%" in text
    assert "(g1 at epoch 2, in the sweep's evaluations)" in text  # not the finalists' test-split figures
    on_validation = frame.assign(**{"protocol.reference_split": "validation"})
    assert "in the sweep's evaluations on the validation split)" in leader_sentence(on_validation, obj, None)[0]
    assert leader_sentence(frame, obj, 9e12)[0].endswith("it leads without the limit too (80.0%).")
    assert leader_sentence(frame[frame["method"] == "ddpm"], obj, None)[0] == ""  # one family: no view
    # a family with no checkpoint within the budget is listed with its cheapest, not left out
    html = equal_compute_table(equal_compute(frame, obj, 1e12), obj, 1e12, frame)
    assert html.count("<tr>") == 3 and "ddpm" in html  # the header, ddpm and dcgan at 1e12
    later = frame[(frame["method"] == "dcgan") | (frame["epoch"] > 1)]  # ddpm evaluated from 2e12 on
    html = equal_compute_table(equal_compute(later, obj, 1.5e12), obj, 1.5e12, later)
    assert "none within the budget: its cheapest evaluated checkpoint took 2e+12 FLOPs (d1 at epoch 2)" in html
    config = apply_overrides(ExperimentConfig(), {"report.compute_budget": 2e13})  # --set report.compute_budget=2e13
    assert config.report.compute_budget == 2e13


def test_the_report_reads_the_budget_from_a_benchmarks_config(tmp_path):
    """A run of several experiments (benchmark.py) saves each one's config under "experiments", the
    report settings with them: the page's equal-compute view takes the budget from there."""
    from condgen_bench.reports import build_report
    from test_reports import make_run

    make_run(str(tmp_path))
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "experiments": [{"method": "ddpm", "report": {"compute_budget": 2.5e12}}]}))
    page = open(build_report(str(tmp_path)), encoding="utf-8").read()
    assert "At equal training compute (at most 2.5e+12 FLOPs, report.compute_budget), ddpm leads" in page


# ---------------------------------------------------------------- several objectives


def test_objectives_are_checked_and_asha_and_pbt_refuse_them():
    SweepConfig(objectives={"sample_accuracy": "max", "train_flops": "min"})
    with pytest.raises(ValueError, match="'asha' ranks trials on one metric and cannot weigh several objectives"):
        SweepConfig(scheduler="asha", objectives={"sample_accuracy": "max", "train_flops": "min"})
    with pytest.raises(ValueError, match="must hold the sweep metric with its mode"):
        SweepConfig(objectives={"fid_domain": "min", "train_flops": "min"})
    with pytest.raises(ValueError, match="'max' or 'min'"):
        SweepConfig(objectives={"sample_accuracy": "max", "train_flops": "low"})
    with pytest.raises(ValueError, match="two or more"):
        SweepConfig(objectives={"sample_accuracy": "max"})
    config = apply_overrides(ExperimentConfig(), {"sweep.objectives": {"sample_accuracy": "max", "train_flops": "min"}})
    assert config.sweep.objectives == {"sample_accuracy": "max", "train_flops": "min"}


def test_pareto_mask_in_several_objectives_and_the_spread_along_it():
    values = pd.DataFrame({"acc": [0.9, 0.8, 0.7, 0.95, 0.6], "flops": [5.0, 2.0, 1.0, 9.0, 3.0]})
    assert pareto_mask(values, {"acc": "max", "flops": "min"}).tolist() == [True, True, True, True, False]
    ordered = pd.DataFrame({"x": range(7)})
    assert spread(ordered, 3)["x"].tolist() == [0, 3, 6] and spread(ordered, 1)["x"].tolist() == [0]
    assert spread(ordered, 9)["x"].tolist() == list(range(7))


def test_the_finalists_are_the_fronts_trials_spread_along_it_and_the_rows_mark_the_front():
    """Four trials, each at its best epoch by accuracy: a (0.9 at 8e12 FLOPs), b (0.8 at 2e12), c (0.5 at
    1e12), d (0.4 at 3e12: dominated by b). Two finalists: the front's two ends, cheapest first."""
    rows = []
    for trial, epochs in {"a": [(4, 4e12, 0.7), (8, 8e12, 0.9)], "b": [(2, 2e12, 0.8), (4, 4e12, 0.6)],
                          "c": [(1, 1e12, 0.5)], "d": [(3, 3e12, 0.4)]}.items():
        rows += [{"trial_id": trial, "status": "completed", "stage": "tracking", "epoch": e, "train_flops": f,
                  "sample_accuracy": v} for e, f, v in epochs]
    frame = pd.DataFrame(rows)
    config = ExperimentConfig(name="x")
    config.sweep.objectives = {"sample_accuracy": "max", "train_flops": "min"}
    config.eval.finalists = 2
    assert front_rows(frame, config)["trial_id"].tolist() == ["c", "b", "a"]
    assert [(f.trial_id, f.rank, f.value) for f in select_finalists(frame, pd.DataFrame(), config)] == [
        ("c", 1, 0.5), ("a", 2, 0.9)]
    marked = mark_front(frame, config)
    assert marked.loc[marked["on_front"], ["trial_id", "epoch"]].values.tolist() == [["a", 8], ["b", 2], ["c", 1]]
    config.sweep.objectives = {}
    assert "on_front" not in mark_front(frame, config)
