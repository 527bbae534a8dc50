"""The plainest way to label photos with an exported model: Pillow and ONNX Runtime, nothing of pasture.
benchmarks/predict_runtime.py times `pasture predict` against it (issue 42's second ratio).

    python benchmarks/plain_onnx_predict.py MODEL.onnx FOLDER
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
size, classes = int(meta["image_size"]), json.loads(meta["classes"])
files = sorted(path for path in Path(sys.argv[2]).rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))


def decode(path):
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        square = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


for start in range(0, len(files), 16):
    batch = files[start : start + 16]
    probabilities = session.run(None, {session.get_inputs()[0].name: np.stack([decode(path) for path in batch])})[0]
    for path, row in zip(batch, probabilities):
        print(f"{path}\t{classes[int(row.argmax())]}\t{row.max():.3f}")
