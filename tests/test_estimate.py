"""The wall time --dry-run estimates (harness/estimate.py): the work counted from the config, priced with
given costs (the dry run measures them on the machine), and the cases it declines. The dry run's own line:
tests/test_config.py."""

import pytest

from condgen_bench.datasets import DataConfig
from condgen_bench.harness import estimate
from condgen_bench.harness.config import ClusterConfig, EvalConfig, ExperimentConfig, SweepConfig, TrainConfig


def config(**sweep) -> ExperimentConfig:
    return ExperimentConfig(data=DataConfig(num_train=700, num_test=140),
                            train=TrainConfig(epochs=4, batch_size=10, eval_every=2),
                            eval=EvalConfig(samples_per_class=10, bpd_images=0, inception_at="never", finalists=0),
                            sweep=SweepConfig(**sweep))


def test_a_trial_costs_its_start_its_steps_and_its_evaluations_samples():
    c = config()
    costs = estimate.Costs(step_seconds=0.5, sample_seconds=0.01)
    # 4 epochs x 70 steps x 0.5 s, evaluations at epochs 2 and 4 of 70 samples each
    assert estimate.trial_seconds(c, costs, 700) == pytest.approx(estimate.TRIAL_START_SECONDS + 140 + 2 * 0.7)
    assert estimate.trial_seconds(c, costs, 700, epochs=2) == pytest.approx(estimate.TRIAL_START_SECONDS + 70 + 0.7)
    c.eval.inception_at = "final"  # Inception features of the last evaluation's samples
    assert estimate.trial_seconds(c, costs, 700) == pytest.approx(
        estimate.TRIAL_START_SECONDS + 140 + 2 * 0.7 + 70 * estimate.INCEPTION_SECONDS_PER_IMAGE)


def test_asha_keeps_the_best_fraction_at_each_rung_and_always_the_first_trial():
    default = config(scheduler="asha", grace_period=2, reduction_factor=3, space={"train.epochs": [2, 13]})
    assert estimate.asha_stops(default, 2) == [None, 2]  # the default DDPM sweep: 2 + 13 epochs, as measured
    nine = config(scheduler="asha", grace_period=1, reduction_factor=3)
    nine.train.epochs = 9
    assert estimate.asha_stops(nine, 9) == [None, 3, 3, 1, 1, 1, 1, 1, 1]


def test_the_estimate_line_and_the_runs_it_declines():
    trials = [(config(), estimate.Costs(0.5, 0.01))] * 2
    line = estimate.describe(config(max_concurrent_trials=2), trials)
    assert line.startswith("estimated wall time about ") and "a training step 0.50 s" in line
    asha = config(scheduler="asha", grace_period=2)
    assert "if ASHA keeps the best 1/2 at each rung, at most" in estimate.describe(asha, trials)
    gpu = config()
    gpu.cluster = ClusterConfig(gpus_per_worker=1)
    assert estimate.describe(gpu, trials).startswith("no wall-time estimate")
    fer = config()
    fer.data = DataConfig(name="fer2013", data_root="x.csv")
    assert "known once it loads" in estimate.describe(fer, trials)


def test_the_augmentation_study_is_priced_for_a_few_shot_finalist_only():
    c = config()
    costs = estimate.Costs(step_seconds=0.5, sample_seconds=0.01)
    without = estimate.finalist_seconds(c, costs, 700)
    c.eval.augment_study = True
    assert estimate.finalist_seconds(c, costs, 700) == without  # not few-shot: the plan skips it
    c.data.shots_per_class = 10
    # 2 x (1 real + 3 selections x (4 ratios + generated only)) arms x 3 seeds at 100 steps; a pool of
    # 5 x 10 / 0.5 = 100 images a class
    arms = 2 * (1 + 3 * 5)
    # the classifiers as Ray tasks, two at once on 2 cores (eval.classifier_tasks), or one after another
    study = 100 * 7 * 0.01 + arms * 3 * estimate.STUDY_CLASSIFIER_SECONDS / estimate.STUDY_TASKS_SPEEDUP
    assert estimate.study_seconds(c, costs) == pytest.approx(study)
    assert estimate.finalist_seconds(c, costs, 700) == pytest.approx(without + study)
    c.eval.classifier_tasks = False
    assert estimate.study_seconds(c, costs) == pytest.approx(100 * 7 * 0.01 + arms * 3 * estimate.STUDY_CLASSIFIER_SECONDS)
