"""Classifiers: recipes -> a trained model -> one scored run record -> what users do with it.

    recipe_fields  Recipe: a recipe's fields with their help and bounds (torch-free)
    recipes      presets as data, resolve_recipe, the learning-rate schedule (torch-free)
    augment      batched augmentation presets, MixUp/CutMix
    steps        a training step's parts: the optimiser of a recipe, train mode, synthetic images mixed in
    fit          the training loop: members, EMA, synthetic mixing, checkpoints and resume
    features     a frozen backbone's features per image, cached on disk (probe, LP-FT, adapt, doctor)
    logistic     the probe's head: logistic regression solved to convergence, C chosen on held-out folds
    probe        the probe run: features, the head (an ensemble's members), the familiarity bank; LP-FT's start
    probe_file   probe.npz: a probe run's heads and bank as numpy arrays; the run scored without torch
    backbones    a frozen backbone's pooled features, by ONNX Runtime (graph cached, checked) or torch
    familiarity  how familiar a photo is (kNN to the training photos, a threshold)
    adapt        label spreading to a new camera's photos, the guard, which photos to label first
    new_camera   `adapt` and `ask`: a probe run fitted to a folder of new photos; LABELS.csv
    self_training  `adapt` of a fine-tuned run: its sure labels of the new photos join its training photos
    selfsup      SimCLR pretraining on the training images
    distill      a small student that learns to match a teacher run (the cached teacher bank)
    transfer     what a run trains on besides its photos: a synthetic set, or a teacher run's bank
    trained      TrainResult, ensemble members, load_run, LoadedRun (a finished run folder, loaded) and the run's own data split
    evaluate     probabilities, TTA, accuracy with intervals, score_run -> RunRecord
    calibration  expected calibration error, the reliability diagram, risk-coverage, AUROC
    card         MODEL_CARD.md of a run folder
    finish       a trained run's folder finished: scores, figures, model card, metrics.json last
    explain      Grad-CAM and occlusion maps, top losses
    predictions  predictions for any number of files, streamed to CSV (torch-free)

Kept torch-free at import: modules are imported by name (`from pasture.classify.fit import ...`).
"""
