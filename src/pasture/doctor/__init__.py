"""The data doctor: checks a labelled image folder before any training.

extra       its optional libraries (the .[doctor] extra), checked once with one message
imagestats  trivial per-image statistics in named families (colour, brightness, sharpness, jpeg, size)
checks      near-duplicates (pHash), the shortcut probe, groups (photo sources)
labels      out-of-fold probabilities and cleanlab's likely label errors
report      the headline findings, and the HTML page with thumbnails
examine     all of it on one folder: `pasture doctor DATA`
"""
