"""Exports: a finished run as one self-contained file for another runtime, checked against the run, and
the runners that use those files without torch.

    onnx_export      one self-contained ONNX file (probabilities, and the familiarity of a probe run)
    int8             the ONNX file quantized to int8, calibrated on the run's photos, gated on agreement
    openvino_export  OpenVINO IR from the checked ONNX graph, checked with the OpenVINO runtime
    coreml_export    a Core ML package (image in, probabilities out), checked as a spec off Apple systems
    tflite_export    a .tflite file by litert-torch, checked with the LiteRT interpreter (its own environment)
    formats          the export formats as data: exporter, default output, needed modules
    onnx_runner      an exported file run by ONNX Runtime alone (torch-free)
    openvino_runner  an OpenVINO export run by the OpenVINO runtime alone (torch-free)
    tflite_runner    a TFLite export run by the LiteRT interpreter alone (torch-free)

Kept torch-free at import: modules are imported by name (`from pasture.export.formats import ...`).
"""
