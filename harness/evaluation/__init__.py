"""Evaluation: what a checkpoint is scored on and how, apart from the Ray orchestration around it.

- ``plan``: what to compute at each stage (tracking, trial-final, finalist), each part with its reason;
- ``scoring``: ``evaluate`` (samples, then every figure the plan asks for, into one record);
- ``fidelity``, ``diversity``: FID / KID / IS / precision-recall, density / coverage / Vendi / memorization;
- ``extractors``: the feature spaces (the domain classifier's, offline Inception, a file's network);
- ``downstream``: classification accuracy score and the augmentation gain;
- ``reference``: the real side of every comparison (classifier, features), cached between runs.

Nothing here imports Ray: the worker (rank 0) and the finalist stage call it in-process. Submodules are
imported where used (this package imports none of them: torch-fidelity takes ~1.3 s to import).
"""
