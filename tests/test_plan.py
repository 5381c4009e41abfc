"""The evaluation plan (harness/plan.py): which stage each epoch of a trial is, under each scheduler, and
what each stage computes."""

import pytest

from condgen_bench.harness.config import EvalConfig, ExperimentConfig, SweepConfig, TrainConfig
from condgen_bench.harness.plan import PARTS, asha_rungs, evaluation_plan

EPOCHS = 12


def experiment(scheduler: str, epochs: int = EPOCHS, **eval_settings) -> ExperimentConfig:
    """Budgets {2, 12}; ASHA with grace 2 and reduction factor 3 compares trials at epochs 2 and 6."""
    return ExperimentConfig(
        train=TrainConfig(epochs=epochs, eval_every=0),
        eval=EvalConfig(samples_per_class=32, final_samples_per_class=100,
                        sampling_sweep={"steps": [5, 10]}, **eval_settings),
        sweep=SweepConfig(space={"train.epochs": [2, EPOCHS]}, scheduler=scheduler, grace_period=2,
                          reduction_factor=3),
    )


EXPECTED_STAGES = {  # scheduler -> {epoch: stage} for the 12-epoch trial (other epochs: nothing)
    "fifo": {12: "trial_final"},
    "asha": {2: "tracking", 6: "tracking", 12: "trial_final"},
}
COMPUTED = {  # stage -> the optional parts it computes under the default settings
    "tracking": set(),
    "trial_final": {"inception", "bpd"},
    "finalist": set(PARTS),
}


@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
@pytest.mark.parametrize("epoch", range(1, EPOCHS + 1))
@pytest.mark.parametrize("stage", ["trial", "finalist"])
def test_plan_over_epochs_schedulers_and_stages(scheduler, epoch, stage):
    config = experiment(scheduler)
    plan = evaluation_plan(config, epoch, is_final=epoch == EPOCHS, stage=stage)
    expected = "finalist" if stage == "finalist" else EXPECTED_STAGES[scheduler].get(epoch)
    assert plan.stage == expected
    if expected is None:
        assert not any(plan.computes(part) for part in PARTS)
        return
    assert {part for part in PARTS if plan.computes(part)} == COMPUTED[expected]
    assert set(plan.skip) == set(PARTS) - COMPUTED[expected]  # every part not computed says why
    assert plan.samples_per_class == (100 if expected == "finalist" else 32)
    assert plan.sample_seed == config.eval.seed  # the same seeded samples for every trial at a stage
    assert plan.sampling_sweep == ({"steps": [5, 10]} if expected == "finalist" else {})


def test_the_short_budget_trial_ends_with_its_trial_final_evaluation():
    config = experiment("asha", epochs=2)
    assert asha_rungs(config) == [2, 6]
    assert evaluation_plan(config, 1, is_final=False, stage="trial").stage is None
    assert evaluation_plan(config, 2, is_final=True, stage="trial").stage == "trial_final"


def test_eval_every_and_listed_epochs_are_tracked():
    config = experiment("fifo")
    config.train.eval_every, config.train.eval_epochs = 4, [5]
    stages = {e: evaluation_plan(config, e, e == EPOCHS, "trial").stage for e in range(1, EPOCHS + 1)}
    assert {e for e, s in stages.items() if s == "tracking"} == {4, 5, 8}


@pytest.mark.parametrize("inception_at, stages", [
    ("every", {"tracking", "trial_final", "finalist"}),
    ("final", {"trial_final", "finalist"}),
    ("finalists", {"finalist"}),
    ("never", set()),
])
def test_inception_at_chooses_the_stages_that_pay_for_inception(inception_at, stages):
    config = experiment("asha", inception_at=inception_at)
    plans = [evaluation_plan(config, 2, False, "trial"), evaluation_plan(config, EPOCHS, True, "trial"),
             evaluation_plan(config, EPOCHS, True, "finalist")]
    assert {p.stage for p in plans if p.computes("inception")} == stages
    for plan in plans:
        assert plan.computes("inception") or "inception_at" in plan.skip["inception"]


def test_disabled_parts_say_so_and_unknown_names_fail():
    config = experiment("fifo", cas=False, augment=False, bpd_images=0, bpd_at="every")
    plan = evaluation_plan(config, EPOCHS, True, "finalist")
    assert plan.skip["cas"] == "disabled (eval.cas)" and plan.skip["augment"] == "disabled (eval.augment)"
    assert "bpd_images = 0" in plan.skip["bpd"] and plan.computes("intra_class_fid")
    with pytest.raises(ValueError, match="valid"):
        plan.computes("fid")
    with pytest.raises(ValueError, match="valid"):
        evaluation_plan(config, 1, False, "tracking")
