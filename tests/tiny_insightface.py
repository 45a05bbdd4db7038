"""Tiny ONNX models with the signatures of insightface's buffalo_l pair, so the insightface code
path (its model zoo routing, SCRFD decoding and NMS, ArcFace alignment) runs without a download.

The detector always reports one face at the centre of its 128x128 input, with five landmarks;
the recogniser is a fixed random projection of the aligned 112x112 face to 512 numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _model(nodes, inputs, outputs, initializers):
    from onnx import helper

    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def write_recognizer(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((588, 512)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 588], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["683"]),
    ]
    onnx.save(
        _model(
            nodes,
            [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
            [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
            [w, shape],
        ),
        path,
    )
    return Path(path)


def write_detector(path: Path, size: int = 128) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    half_box, kps = 40.0, np.array([[-14, -10], [14, -10], [0, 4], [-10, 18], [10, 18]], np.float32)
    consts, outputs = {}, []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (size // stride) ** 2 * 2
            value = np.zeros((n, width), np.float32)
            if stride == 32:  # the anchor whose centre is the middle of the image
                cells = size // stride
                idx = ((cells // 2) * cells + cells // 2) * 2
                value[idx] = {"score": [0.95], "bbox": [half_box / stride] * 4, "kps": (kps / stride).ravel()}[kind]
            name = f"{kind}_{stride}"
            consts[name] = value
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
    ]
    nodes += [helper.make_node("Add", [f"c_{name}", "z"], [name]) for name in consts]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    inits += [numpy_helper.from_array(v, f"c_{k}") for k, v in consts.items()]
    onnx.save(
        _model(
            nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])], outputs, inits
        ),
        path,
    )
    return Path(path)


def install_buffalo_stand_in(data_dir: Path) -> Path:
    """Put the two tiny models where EasyPhoto looks for buffalo_l."""
    from easyphoto_app.faces.insight import insightface_model_dir

    folder = insightface_model_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_detector(folder / "det_10g.onnx")
    write_recognizer(folder / "w600k_r50.onnx")
    return folder
