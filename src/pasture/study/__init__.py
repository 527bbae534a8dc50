"""Studies: many runs compared honestly.

conditions   what a study compares: Condition, the named conditions, parse_condition (torch-free)
design       the replicates every condition runs on: seeds, repeated k-fold, leave-one-group-out
experiment   conditions x replicates (seeds or folds), paired, a resumable store of run records,
             the plan and its estimate, the local engine
ray_engine   the same runs as Ray tasks, on this machine or a Ray cluster
tune         recipe search (Optuna's TPE, ask-and-tell), scored on folds of the training split only
timings      how long runs and GANs took on this machine, for estimates
report       report.md, report.html, results.csv and results.json from one list of blocks
demo         a two-class image set pasture draws itself, and a short experiment on it
"""
