"""Sweep a class-conditional DDPM with Ray Tune + Ray Train, score every trial, write the report.

    python experiments/sweep_ddpm.py                      # local sweep on the embedded synthetic faces
    python experiments/sweep_ddpm.py --address auto --storage-path s3://bucket/runs \\
        --workers-per-trial 4 --gpus-per-worker 1 --set data.image_size=48   # on a Ray cluster
    python experiments/sweep_ddpm.py --smoke-test         # seconds: tiny data, network and budget
    python experiments/sweep_ddpm.py --dry-run            # print the resolved config
    python experiments/sweep_ddpm.py --preset objectives  # eps vs v x fixed vs learned variance (PRESETS)
    python experiments/sweep_ddpm.py --dataset fer2013 --data-root ~/data/fer2013.csv \\
        --classes neutral,fear,angry,surprise,disgust --epochs 4   # your copy of a real dataset (docs/datasets.md)

The default is the local profile: a 2-core laptop (24 px faces, a 0.7M-parameter UNet), sweeping the
learning rate and the epoch budget under ASHA. Trials are scored on 32 samples a class while they train;
the best is then scored with the whole suite on 100 a class (Inception, CAS, augmentation gain,
intra-class FID: about 3.3 minutes on the CPU). Measured here with nothing cached: 9.6 minutes, the
finalist at 67% classifier accuracy. Its epoch budgets suit the 3,500 synthetic training faces; FER2013
has eight times as many.
"""

import sys

import laptop
from condgen_bench.harness.cli import run_experiment
from condgen_bench.harness.config import EvalConfig, ExperimentConfig, SweepConfig, TrainConfig
from condgen_bench.models.ddpm import DDPMConfig
from condgen_bench.models.unet import UNetConfig


def local_profile() -> ExperimentConfig:
    """What differs from the defaults for a laptop-sized run."""
    return ExperimentConfig(
        name="ddpm",
        method="ddpm",
        data=laptop.data(),
        model=DDPMConfig(
            unet=UNetConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(6,)),
            lr=2e-3, sampler="ddim", sampling_steps=15, eta=1.0, guidance=3.0,
        ),
        train=TrainConfig(epochs=13, batch_size=32),
        # Inception features cost ~0.1 s an image on 2 CPU cores: the finalist's 700 samples only
        eval=EvalConfig(samples_per_class=32, batch_size=32, bpd_images=64, bpd_t_samples=32,
                        inception_at="finalists", classifier=laptop.classifier()),
        # ASHA compares trials on sample accuracy after 2 and 6 epochs and keeps the best third going. The
        # two budgets are read off one run per learning rate (harness/budgets.py): 2 trials, not 4. Run one
        # at a time, ASHA never stops the first trial, so the profile's own learning rate comes first.
        sweep=SweepConfig(space={"model.lr": [2e-3, 5e-4], "train.epochs": [2, 13]}, scheduler="asha",
                          metric="sample_accuracy", mode="max", grace_period=2, reduction_factor=3),
    )


SMOKE_TEST = laptop.smoke(**{  # dotted overrides for --smoke-test on top of the shared ones
    "model.unet.base_channels": 8, "model.unet.channel_mult": [1, 2], "model.unet.attention_resolutions": [8],
    "model.unet.num_heads": 2, "model.sampling_steps": 3, "model.diffusion.timesteps": 50,
    "train.batch_size": 32, "sweep.scheduler": "fifo", "eval.bpd_images": 8, "eval.bpd_t_samples": 4,
    "sweep.space": {"model.lr": [1e-3], "train.epochs": [1, 2]},
})

# benchmark.py's setting: the sweep's best learning rate at 8 of its 13 epochs (69% at 13)
BENCHMARK = {"model.lr": 2e-3, "train.epochs": 8}

PRESETS = {  # --preset NAME: studies on top of the profile (dotted overrides; the search space replaced)
    # the augmentation study on a few-shot run (laptop.py): 350 training faces, so 10x the epochs for about
    # the profile's 1,400 optimizer steps, ASHA's rungs at 20 and 60 of them
    "augmentation": laptop.augmentation(**{"train.epochs": 130, "sweep.grace_period": 20,
                                           "sweep.space": {"model.lr": [2e-3, 5e-4], "train.epochs": [20, 130]}}),
    # epsilon vs v prediction x fixed vs learned variance (hybrid loss), each scored with the full bound
    # and, on its final checkpoint, both samplers at 5 / 15 / 50 steps with and without guidance
    "objectives": {
        "sweep.space": {"model.diffusion.prediction": ["eps", "v"],
                        "model.diffusion.variance": ["fixed_large", "learned"]},
        "sweep.scheduler": "fifo",
        "eval.finalists": 4,  # every objective gets the full suite and the sampler grid
        "eval.bpd_t_samples": None,  # all T terms
        "eval.sampling_sweep": {"sampler": ["ddim", "ddpm"], "steps": [5, 15, 50], "guidance": [1.0, 3.0]},
    },
    # one model, many samplers: quality against sampling cost from a single checkpoint
    "sampling": {
        "sweep.space": {"train.epochs": [13]},
        "sweep.scheduler": "fifo",
        "eval.sampling_sweep": {"sampler": ["ddim", "ddpm"], "steps": [5, 10, 15, 25, 50, 100],
                                "guidance": [1.0, 2.0, 3.0]},
    },
}

if __name__ == "__main__":
    sys.exit(run_experiment(local_profile(), SMOKE_TEST, description=__doc__, presets=PRESETS))
