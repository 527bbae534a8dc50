"""The ground floor: what every other part of pasture may use, and which uses nothing of pasture above it.

errors     UserError (one line, exit 2) and Interrupted (Ctrl-C after a checkpoint)
defaults   defaults, cache location, the warning printer (torch-free: the CLI's --help reads them)
runs       run folders: atomic writes, checkpoints, the "is this folder ours" guard, versions
record     RunRecord: what one finished run scored (metrics.json and experiment results alike)
runtime    seeding, progress bars, autocast, malloc tuning
stats      intervals, paired comparisons (pure Python)
plots      learning curves and confusion matrices (matplotlib, imported lazily)
"""
