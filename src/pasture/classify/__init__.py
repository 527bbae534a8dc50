"""Classifiers: recipes -> a trained model -> one scored run record.

    recipes    presets as data, resolve_recipe, the learning-rate schedule (torch-free)
    augment    batched augmentation presets, MixUp/CutMix
    evaluate   probabilities, TTA, accuracy with intervals, score_run -> RunRecord
    trained    TrainResult, ensemble members, load_run (a finished run folder -> model)
    probe      linear probe on a frozen pretrained backbone (cached features), LP-FT head
    selfsup    SimCLR pretraining on the training images
    fit        the training loop: members, EMA, synthetic mixing, checkpoints and resume

Kept torch-free at import: modules are imported by name (`from pasture.classify.fit import ...`).
"""
