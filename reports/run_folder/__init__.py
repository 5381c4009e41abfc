"""The run folder: where every file of a run lives (``layout``), how it is read and written wherever the
run is (``storage``: a local path or a URI), the drills' fault hook on those writes (``faults``), and the
typed records in it: a trial's checkpoint (``checkpoint.TrialCheckpoint``) and an evaluation's record
(``records.EvalRecord``).

The harness writes runs only through this package and the report reads them only through it, so it
imports nothing of either: it sits under reports/ because the report must read a run without the harness
(or Ray) installed, and the harness depends on reports/ already for nothing else but this.
"""
