"""Classifiers: recipes -> a trained model -> one scored run record -> what users do with it.

    recipes      presets as data, resolve_recipe, the learning-rate schedule (torch-free)
    augment      batched augmentation presets, MixUp/CutMix
    fit          the training loop: members, EMA, synthetic mixing, checkpoints and resume
    probe        logistic head on frozen pretrained features (cached), LP-FT's start
    backbones    a frozen backbone's pooled features, by ONNX Runtime (graph cached, checked) or torch
    familiarity  how familiar a photo is (kNN to the training photos, a threshold)
    adapt        label spreading to a new camera's photos, the guard, which photos to label first
    new_camera   `adapt` and `ask`: a probe run fitted to a folder of new photos; LABELS.csv
    selfsup      SimCLR pretraining on the training images
    distill      a small student that learns to match a teacher run (the cached teacher bank)
    transfer     what a run trains on besides its photos: a synthetic set, or a teacher run's bank
    trained      TrainResult, ensemble members, load_run and Classifier (a finished run folder -> model)
    evaluate     probabilities, TTA, accuracy with intervals, score_run -> RunRecord
    calibration  expected calibration error, the reliability diagram, risk-coverage, AUROC
    card         MODEL_CARD.md of a run folder
    finish       a trained run's folder finished: scores, figures, model card, metrics.json last
    explain      Grad-CAM and occlusion maps, top losses
    predictions  predictions for any number of files, streamed to CSV (torch-free)
    export       one self-contained ONNX file, checked against the run
    int8         the ONNX file quantized to int8, calibrated on the run's photos, gated on agreement
    openvino_export  OpenVINO IR from the checked ONNX graph, checked with the OpenVINO runtime
    coreml_export    a Core ML package (image in, probabilities out), checked as a spec off Apple systems
    tflite_export    a .tflite file by litert-torch, checked with the LiteRT interpreter (its own environment)
    formats      the export formats as data: exporter, default output, needed modules
    onnx_runner  an exported file run by ONNX Runtime alone (torch-free)
    openvino_runner  an OpenVINO export run by the OpenVINO runtime alone (torch-free)
    tflite_runner    a TFLite export run by the LiteRT interpreter alone (torch-free)

Kept torch-free at import: modules are imported by name (`from pasture.classify.fit import ...`).
"""
