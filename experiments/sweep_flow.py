"""Sweep class-conditional flow matching (rectified flow) with Ray Tune + Ray Train, score every trial,
write the report.

    python experiments/sweep_flow.py                      # local sweep on the embedded synthetic faces
    python experiments/sweep_flow.py --smoke-test         # seconds: tiny data, network and budget
    python experiments/sweep_flow.py --preset sampling    # Euler vs Heun at 3-50 steps, with and without guidance
    python experiments/sweep_flow.py --preset timesteps   # uniform vs logit-normal t in training

The local profile is DDPM's (sweep_ddpm.py), so the two compare at equal cost: the same 24 px faces, the
same 0.7M-parameter UNet (predicting the velocity instead of the noise), the same learning rates and
epoch budgets under ASHA, and the same sampling cost (15 Euler steps with guidance w = 3: 30 network
calls an image, as DDPM's 15 guided DDIM steps). Bits/dim comes from the ODE likelihood (Heun, Hutchinson
trace) instead of DDPM's variational bound.
"""

import sys

import laptop
import sweep_ddpm
from condgen_bench.harness.cli import run_experiment
from condgen_bench.harness.config import ExperimentConfig
from condgen_bench.models.flow import FlowConfig


def local_profile() -> ExperimentConfig:
    """DDPM's local profile (data, UNet, budgets, evaluation, search space) with the flow model."""
    config = sweep_ddpm.local_profile()
    config.name = config.method = "flow"
    config.model = FlowConfig(unet=config.model.unet, lr=config.model.lr, sampler="euler", sampling_steps=15,
                              guidance=3.0)
    config.eval.bpd_t_samples = None  # DDPM's Monte Carlo over t; the ODE likelihood has none
    return config


SMOKE_TEST = laptop.smoke(**{  # dotted overrides for --smoke-test on top of the shared ones
    "model.unet.base_channels": 8, "model.unet.channel_mult": [1, 2], "model.unet.attention_resolutions": [8],
    "model.unet.num_heads": 2, "model.sampling_steps": 3, "model.likelihood_steps": 4,
    "train.batch_size": 32, "sweep.scheduler": "fifo", "eval.bpd_images": 8,
    "sweep.space": {"model.lr": [1e-3], "train.epochs": [1, 2]},
})

# benchmark.py's setting: DDPM's (the same learning rate and budget)
BENCHMARK = {"model.lr": 2e-3, "train.epochs": 8}

PRESETS = {  # --preset NAME: studies on top of the profile (dotted overrides; the search space replaced)
    "augmentation": laptop.augmentation(),  # the augmentation study on a few-shot run (laptop.py)
    # one model, many samplers: quality against sampling cost from a single checkpoint
    "sampling": {
        "sweep.space": {"train.epochs": [13]},
        "sweep.scheduler": "fifo",
        "eval.sampling_sweep": {"sampler": ["euler", "heun"], "steps": [3, 5, 10, 15, 25, 50],
                                "guidance": [1.0, 3.0]},
    },
    # where training draws t: uniformly, or more often mid-path
    "timesteps": {
        "sweep.space": {"model.t_sampling": ["uniform", "logit_normal"]},
        "sweep.scheduler": "fifo",
        "eval.finalists": 2,
    },
}

if __name__ == "__main__":
    sys.exit(run_experiment(local_profile(), SMOKE_TEST, description=__doc__, presets=PRESETS))
