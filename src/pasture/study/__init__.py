"""Studies: many runs compared honestly.

experiment   conditions x replicates (seeds or folds), paired, a resumable store of run records
report       report.md, report.html, results.csv and results.json from one list of blocks
demo         a two-class image set pasture draws itself, and a short experiment on it
"""
