#!/usr/bin/env python3
"""Builds ct_hyperdense_reference.onnx: the hub's reference CT model.

A PIPELINE REFERENCE, NOT A CLINICAL MODEL. It has no trained weights and no claim of diagnostic
accuracy: it is a fixed rule written as an ONNX graph, so that the whole inference path (model
registry, DICOM decoding, Hounsfield units, resizing, ONNX Runtime, heatmap decoding, diagnosis
events, findings API) runs on a real ONNX file that anyone can rebuild and read.

The rule: on a head CT slice in Hounsfield units (input "hu", [N, 1, 128, 128]), mark pixels in
the hyperdense band of fresh blood (50 to 90 HU) that are not within 2 pixels of bone (> 200 HU,
which removes the partial-volume rim inside the skull), and output the fraction of marked pixels
in each 8 x 8 cell ("heatmap", [N, 1, 16, 16]). The manifest's decoder turns connected cells at or
above its threshold into boxes.

Usage: python make_ct_reference.py [OUTPUT]   (default: next to this script)
"""

import os
import sys

import onnx
from onnx import TensorProto, helper

LOW_HU, HIGH_HU, BONE_HU = 50.0, 90.0, 200.0
SIDE, CELL = 128, 8


def build() -> onnx.ModelProto:
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name],
        value=helper.make_tensor(name + "_t", TensorProto.FLOAT, [], [value]))
    nodes = [
        const("low", LOW_HU),
        const("high", HIGH_HU),
        const("bone", BONE_HU),
        const("one", 1.0),
        helper.make_node("Greater", ["hu", "low"], ["above_low"]),
        helper.make_node("Less", ["hu", "high"], ["below_high"]),
        helper.make_node("And", ["above_low", "below_high"], ["in_band_b"]),
        helper.make_node("Cast", ["in_band_b"], ["in_band"], to=TensorProto.FLOAT),
        helper.make_node("Greater", ["hu", "bone"], ["is_bone_b"]),
        helper.make_node("Cast", ["is_bone_b"], ["is_bone"], to=TensorProto.FLOAT),
        helper.make_node("MaxPool", ["is_bone"], ["near_bone"],
                         kernel_shape=[5, 5], pads=[2, 2, 2, 2], strides=[1, 1]),
        helper.make_node("Sub", ["one", "near_bone"], ["away_from_bone"]),
        helper.make_node("Mul", ["in_band", "away_from_bone"], ["marked"]),
        helper.make_node("AveragePool", ["marked"], ["heatmap"],
                         kernel_shape=[CELL, CELL], strides=[CELL, CELL]),
    ]
    graph = helper.make_graph(
        nodes,
        "ct_hyperdense_reference",
        [helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["n", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info(
            "heatmap", TensorProto.FLOAT, ["n", 1, SIDE // CELL, SIDE // CELL])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="hub make_ct_reference.py",
        doc_string="Pipeline reference, not a clinical model: a fixed HU-band rule, no training.",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "ct_hyperdense_reference.onnx")
    onnx.save(build(), out)
    print(out)


if __name__ == "__main__":
    main()
