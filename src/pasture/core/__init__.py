"""The ground floor: what every other part of pasture may use, and which uses nothing of pasture above it.

errors     UserError (one line, exit 2), Interrupted (Ctrl-C after a checkpoint), FolderBusy
defaults   defaults, DataOptions, cache location, the warning printer (torch-free: --help reads them)
extras     optional libraries, imported only when a feature needs them, with one install hint
paths      names from outside turned into paths and printable text, safely
imagefile  image files -> uint8 arrays (the one decoding rule; torch-free)
processes  whether a process is alive (whose leftovers a folder holds)
locks      folder locks: one writer at a time (flock), shared readers, a folder made and locked
runs       run folders: atomic writes, checkpoints, the "is this folder ours" guard, a run folder's life
store      things built once and shared by every process that needs them (under the folder's lock)
cache      the one content-keyed disk cache (decoded images, probe features, distillation banks)
record     RunRecord: what one finished run scored (metrics.json and experiment results alike)
runtime    seeding, progress bars, malloc tuning, usable cores
progress   bars for reading photos and features, shown by the CLI unless --quiet (torch-free)
device     the device (CUDA, MPS, CPU), precision and autocast, reproducible CUDA
loop       the one training loop: a step function, events after each step, the checkpoint of a loop
stats      intervals, paired comparisons (pure Python; scipy's t distribution where needed)
plots      learning curves and confusion matrices (matplotlib, imported lazily)
"""
