"""The evaluation plan (harness/evaluation/plan.py): which stage each epoch of a trial is, under each scheduler, and
what each stage computes."""

import pytest

from condgen_bench.harness.config import EvalConfig, ExperimentConfig, SweepConfig, TrainConfig
from condgen_bench.harness.evaluation.plan import (OWN_SAMPLER_ONLY, PARTS, STAGES, Capabilities, EvalPlan,
                                                  finalist_plan, trial_plan)
from condgen_bench.harness.schedulers import scheduler_of

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
    "finalist": set(PARTS) - {"augment_study"},  # off by default (eval.augment_study)
}


@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
@pytest.mark.parametrize("epoch", range(1, EPOCHS + 1))
@pytest.mark.parametrize("stage", ["trial", "finalist"])
def test_plan_over_epochs_schedulers_and_stages(scheduler, epoch, stage):
    config = experiment(scheduler)
    plan = finalist_plan(config) if stage == "finalist" else trial_plan(config, epoch)
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
    assert scheduler_of(config).decision_epochs(config) == [2, 6]  # ASHA's rungs
    assert trial_plan(config, 1).stage is None
    assert trial_plan(config, 2).stage == "trial_final"


def test_eval_every_and_listed_epochs_are_tracked():
    config = experiment("fifo")
    config.train.eval_every, config.train.eval_epochs = 4, [5]
    stages = {e: trial_plan(config, e).stage for e in range(1, EPOCHS + 1)}
    assert {e for e, s in stages.items() if s == "tracking"} == {4, 5, 8}


@pytest.mark.parametrize("inception_at, stages", [
    ("every", {"tracking", "trial_final", "finalist"}),
    ("final", {"trial_final", "finalist"}),
    ("finalists", {"finalist"}),
    ("never", set()),
])
def test_inception_at_chooses_the_stages_that_pay_for_inception(inception_at, stages):
    config = experiment("asha", inception_at=inception_at)
    plans = [trial_plan(config, 2), trial_plan(config, EPOCHS), finalist_plan(config)]
    assert {p.stage for p in plans if p.computes("inception")} == stages
    for plan in plans:
        assert plan.computes("inception") or "inception_at" in plan.skip["inception"]


def test_disabled_parts_say_so_and_unknown_names_fail():
    config = experiment("fifo", cas=False, augment=False, bpd_images=0, bpd_at="every")
    plan = finalist_plan(config)
    assert plan.skip["cas"] == "disabled (eval.cas)" and plan.skip["augment"] == "disabled (eval.augment)"
    assert "bpd_images = 0" in plan.skip["bpd"] and plan.computes("intra_class_fid")
    with pytest.raises(ValueError, match="valid"):
        plan.computes("fid")
    with pytest.raises(ValueError, match="valid"):
        EvalPlan("trial")  # a request's name, not a stage: every plan's stage is one of STAGES
    assert {trial_plan(config, EPOCHS).stage, trial_plan(experiment("asha"), 2).stage, plan.stage} == set(STAGES)


def test_what_the_method_and_reference_cannot_compute_is_the_plans_reason_and_comes_first():
    """A family without a likelihood has no bits/dim whatever eval.bpd_at says; no Inception network on this
    machine: its metrics are missing with the reference's reason, where the config would compute them."""
    config = experiment("asha", inception_at="every")
    gan = Capabilities(likelihood="dcgan has no likelihood", inception="no weights on this machine")
    for plan in (trial_plan(config, 2, gan), trial_plan(config, EPOCHS, gan), finalist_plan(config, gan)):
        assert plan.skip["bpd"] == "dcgan has no likelihood" and plan.skip["inception"] == "no weights on this machine"
    # the config's reason stands where the config does not ask for the part
    assert "inception_at" in trial_plan(experiment("asha", inception_at="never"), EPOCHS, gan).skip["inception"]
    # the trial-final bound is taken for the finalists only where it was on the test split too
    assert finalist_plan(config).bpd_from is None
    assert finalist_plan(config, Capabilities(validation_split=False)).bpd_from == "trial_final"
    assert finalist_plan(config, Capabilities(likelihood="no", validation_split=False)).bpd_from is None


def test_a_sampling_sweep_record_takes_the_bound_of_the_own_sampler_record_and_has_no_cas():
    config = experiment("fifo", cas=False)
    own = finalist_plan(config)
    swept = own.under({"steps": 5})
    assert swept.settings == {"steps": 5} and swept.sampling_sweep == {} and swept.bpd_from == "own_sampler"
    assert swept.skip["augment"] == OWN_SAMPLER_ONLY and swept.skip["cas"] == "disabled (eval.cas)"
    assert own.settings == {} and own.computes("augment")
    assert finalist_plan(config, Capabilities(likelihood="no")).under({"steps": 5}).bpd_from is None


def test_the_augmentation_study_runs_for_the_finalists_of_a_few_shot_run_under_the_own_sampler_only():
    config = experiment("fifo", augment_study=True)
    own = finalist_plan(config, Capabilities(few_shot=True))
    assert own.computes("augment_study") and not trial_plan(config, EPOCHS).computes("augment_study")
    assert own.under({"steps": 5}).skip["augment_study"] == OWN_SAMPLER_ONLY
    assert "not few-shot" in finalist_plan(config).skip["augment_study"]  # its real arm would not be paired
    assert finalist_plan(experiment("fifo"), Capabilities(few_shot=True)).skip["augment_study"] == \
        "disabled (eval.augment_study)"
    from condgen_bench.harness.evaluation.plan import metric_part
    assert metric_part("study_best_gain") == "augment_study" and metric_part("aug_gain") == "augment"


# ---------------------------------------------------------------------------------------------
# Epoch budgets read off one run (harness/budgets.py)


def test_swept_budgets_fold_into_one_run_unless_training_depends_on_the_budget():
    from condgen_bench.harness.budgets import budget_id, budget_values, folded_budgets, split_budget_id
    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.sweep import param_space

    config = ExperimentConfig(sweep=SweepConfig(space={"model.lr": [1e-3, 2e-3], "train.epochs": [13, 2, 6]}))
    assert folded_budgets(config) == [2, 6, 13]
    values = param_space(config)  # one run per learning rate, to 13 epochs, standing for 2 and 6 too
    assert values["train"]["epochs"] == 13 and values["train"]["budgets"] == [2, 6]
    assert values["model"]["lr"] == {"grid_search": [1e-3, 2e-3]} and "grid_search" not in str(values["train"])
    cosine = ExperimentConfig(sweep=SweepConfig(space={"train.epochs": [2, 13],
                                                       "model.lr_schedule": ["constant", "cosine"]}))
    assert folded_budgets(cosine) == []  # cosine decays to each budget's own end: separate trials
    assert param_space(cosine)["train"]["epochs"] == {"grid_search": [2, 13]}
    assert folded_budgets(ExperimentConfig(sweep=SweepConfig(space={"train.epochs": [2, 13]}, fold_budgets=False))) == []
    assert folded_budgets(ExperimentConfig(sweep=SweepConfig(space={"train.epochs": [4]}))) == []
    assert split_budget_id(budget_id("c5db7_00001", 2)) == ("c5db7_00001", 2)
    assert split_budget_id("c5db7_00001") == ("c5db7_00001", None)
    stands_for = budget_values(to_dict(ExperimentConfig(train=TrainConfig(epochs=13, budgets=[2, 6]))), 6)
    assert stands_for["train"]["epochs"] == 6 and stands_for["train"]["budgets"] == []


def test_a_budget_read_off_a_run_ends_with_the_final_evaluation_a_separate_trial_would_have():
    long = ExperimentConfig(train=TrainConfig(epochs=13, budgets=[2, 6]))
    short = ExperimentConfig(train=TrainConfig(epochs=2))
    from condgen_bench.harness.evaluation.plan import ends_a_budget

    assert [e for e in range(1, 14) if ends_a_budget(long, e)] == [2, 6, 13]
    assert trial_plan(long, 2) == trial_plan(short, 2)


def test_the_cosine_schedule_decays_to_the_trials_own_end_and_constant_does_not():
    from condgen_bench.models.schedule import lr_factor

    assert [lr_factor("constant", s, 4, 100) for s in (0, 3, 50, 99)] == [0.25, 1.0, 1.0, 1.0]
    assert lr_factor("cosine", 3, 4, 100) == 1.0 and lr_factor("cosine", 99, 4, 100) < 0.001
    assert lr_factor("cosine", 52, 4, 100) == pytest.approx(0.5)  # halfway from the warm-up's end
    # the first steps of a 2-epoch and a 13-epoch cosine trial already differ; constant ones never do
    assert lr_factor("cosine", 10, 4, 20) != lr_factor("cosine", 10, 4, 130)
    assert lr_factor("constant", 10, 4, 20) == lr_factor("constant", 10, 4, 130)
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        ExperimentConfig().model.__class__(lr_schedule="linear")
