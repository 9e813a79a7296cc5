"""int8: post-training static quantization, calibrated on real images, for torch and OpenVINO.

torch: PyTorch's PT2E flow with the x86 inductor quantizer (torchao, the ``[int8]`` extra), then
``torch.compile`` with frozen weights, which is what turns the quantize/dequantize pairs into
int8 oneDNN kernels (uncompiled, the quantized graph only simulates int8 in fp32). OpenVINO: NNCF
(the ``[openvino]`` extra). Measured on the 2-core AMX Xeon at batch 16 (``/tmp/proto14``): PT2E
18x torchvision eager on googlenet and inception_v3, NNCF + OpenVINO 29x and 46x; onnxruntime's
``quantize_static`` 8x (its CPU provider has no AMX int8 convolutions), so it is left out.
"""

import contextlib
import copy
import logging
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..images import create_transform, image_files, read_image
from .extras import require
from .torch_path import InferenceModel

log = logging.getLogger("inceptorch")

CALIBRATION_IMAGES = 300  # "a few hundred": more moved no agreement figure measured
CALIBRATION_BATCH = 16


def calibration_batches(model: nn.Module, calibration, limit: int = CALIBRATION_IMAGES) -> list[torch.Tensor]:
    """``calibration`` as a list of input batches: a tensor of preprocessed images (N, C, H, W), a list
    of such tensors, or image files and folders (read and preprocessed as ``predict`` does)."""
    if calibration is None:
        raise ConfigError("int8 needs calibration images: pass calibration= a folder of images or a tensor "
                          "of preprocessed ones (--calibration FOLDER), a few hundred like those to predict")
    if isinstance(calibration, (str, Path)) or (isinstance(calibration, (list, tuple)) and calibration
                                                and isinstance(calibration[0], (str, Path))):
        files = image_files([calibration] if isinstance(calibration, (str, Path)) else calibration)[:limit]
        transform = create_transform(model)
        calibration = torch.stack([transform(read_image(f, getattr(model, "in_chans", 3))) for f in files])
    if isinstance(calibration, torch.Tensor):
        calibration = list(calibration[:limit].split(CALIBRATION_BATCH))
    batches = [b.float() for b in calibration]
    if not batches or not len(batches[0]):
        raise ConfigError("the calibration images are empty: give a folder or tensor with a few hundred images")
    return batches


def torch_int8(model: nn.Module, example_input: torch.Tensor, batches: list[torch.Tensor]) -> InferenceModel:
    """PT2E int8 with the x86 inductor quantizer, compiled with frozen weights (compiles per input shape:
    10-50 s each on 2 cores)."""
    require("torchao", "torch int8")
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    body = copy.deepcopy(model).eval()  # batch norm unfolded: PT2E folds it itself
    traced = example_input.float()
    if len(traced) == 1:  # export would fix the batch at 1, and the calibration batches are larger
        traced = traced.expand(2, *traced.shape[1:])
    with torch.no_grad():
        exported = torch.export.export(body, (traced,), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for x in batches:
            prepared(x)
        quantized = convert_pt2e(prepared)
    move_exported_model_to_eval(quantized)
    allow_exported_model_train_eval(quantized)  # InferenceModel's eval() would raise otherwise
    # dynamic=False: a static graph per input shape (the dynamic recompile broke a quantized conv's strides)
    optimized = InferenceModel(torch.compile(quantized, dynamic=False), model, compiled=True, path="torch int8",
                               channels_last=False)
    optimized(example_input)
    return optimized


def openvino_int8(ov_model, batches: list[torch.Tensor]):
    """The OpenVINO model quantized by NNCF on ``batches`` (one image at a time, as NNCF counts them)."""
    nncf = require("nncf", "OpenVINO int8")
    images = [image[None].numpy() for x in batches for image in x]
    # its logger only: nncf.set_log_level also sets the level of every handler attached to it (pytest's)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout is for the results
        return nncf.quantize(ov_model, nncf.Dataset(images), subset_size=len(images))
