"""Studies: many runs compared honestly. The modules, from the bottom up:

conditions   what a study compares: Condition, the named conditions, parse_condition (torch-free)
design       the replicates every condition runs on (seeds, repeated k-fold, leave-one-group-out) and
             the RunTask of each (condition, replicate), keyed by its settings (torch-free)
timings      how long runs and GANs took on this machine, and the honest estimate of what is left
inputs       what a run reads from disk (RunInputs): loaded locally, or shipped to a Ray worker
gan_store    the GANs studies train, one per training part, shared by every study on this machine
teachers     the teachers of distillation conditions, stored like GANs, and their soft-label banks
run          one run: train and score a RunTask, store it, read stored runs back
engines      how runs are executed: the Engine protocol, --jobs auto, the local engine, run_tasks
plan         the plan before a study starts: runs stored and left, GANs to train, the estimate
documents    blocks rendered as Markdown and self-contained HTML; results.csv
report       the study's results summarised and compared into blocks; report.md, report.html, results.json
experiment   the spec and run_experiment: check, plan, run, report
ray_engine   the same runs as Ray tasks, on this machine or a Ray cluster
ray_predict  `predict --engine ray`: photos in shards on a Ray cluster, one CSV, resumable
tune         recipe search (Optuna's TPE, ask-and-tell), scored on folds of the training split only
demo         a two-class image set pasture draws itself, and a short experiment on it
"""
