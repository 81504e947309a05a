"""Export-friendly forms of torchvision detectors and segmenters: the forward returns the heads' raw tensors, and
the post-processing that torchvision runs inside its forward (anchor decoding, score thresholds, NMS) moves to the
host or the app, named in words for the manifest and run here for scoring.

- `DetectionHeads` wraps a one-stage detector (SSD, SSDLite, RetinaNet, FCOS): input float32 (1, 3, H, W) RGB in
  [0, 1] already resized to H x W (the mean/std normalisation torchvision's transform does stays inside the model);
  output a dict of `cls_logits` (1, A, C) and `bbox_regression` (1, A, 4) per anchor, plus `bbox_ctrness` (1, A, 1)
  for FCOS. Its anchors, fixed by H x W, are the `anchors` buffer (A, 4; x1, y1, x2, y2 in input pixels).
  `postprocess(outputs)` decodes a batch into per-image boxes, scores and labels exactly as torchvision's own eval
  forward does; `postprocess_steps` says the same in words for the app. Two-stage detectors (Faster / Mask /
  Keypoint R-CNN) run NMS'd proposals through RoIAlign inside forward, so their raw heads are not a fixed-shape
  output: `wrap_detector` refuses them with a `ModelError`.
- `SegmentationLogits` wraps FCN / DeepLabV3 / LRASPP: output the `out` logits (1, C, H, W) as one tensor, already
  upsampled to the input size. The `aux` head is dropped: it exists for the training loss, not for inference.

Every wrapper carries `task`, `output_names`, `postprocess_steps`, `example_input_shape` and
`output_layer_names` (the convolutions whose output channels are classes or box coordinates, which pruning must
keep whole).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import ModelError

BOX_EXP_CLIP = math.log(1000.0 / 16)
"""Largest log scale a decoded box may take (torchvision's `bbox_xform_clip`)."""
TWO_STAGE = ("GeneralizedRCNN",)


def _family(detector: nn.Module) -> str:
    names = [cls.__name__ for cls in type(detector).__mro__]
    for family, cls_name in (("ssd", "SSD"), ("retinanet", "RetinaNet"), ("fcos", "FCOS")):
        if cls_name in names:
            return family
    return "two-stage" if any(n in names for n in TWO_STAGE) else "unknown"


def _last_conv(module: nn.Module, prefix: str) -> str:
    name = None
    for sub_name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            name = sub_name
    if name is None:
        raise ModelError(f"module '{prefix}' has no convolution")
    return f"{prefix}.{name}" if name else prefix


def _head_output_layers(head: nn.Module, family: str) -> tuple[str, ...]:
    if family == "ssd":  # one output conv per feature level in each sub-head's module_list
        return tuple(_last_conv(block, f"head.{part}.module_list.{i}")
                     for part in ("classification_head", "regression_head")
                     for i, block in enumerate(getattr(head, part).module_list))
    names = ["head.classification_head.cls_logits", "head.regression_head.bbox_reg"]
    if family == "fcos":
        names.append("head.regression_head.bbox_ctrness")
    return tuple(names)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu()
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def _decode_centre_size(codes: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Boxes from (dx, dy, dw, dh) offsets relative to anchors' centres and sizes, each divided by its weight."""
    wx, wy, ww, wh = weights
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * widths + codes[:, 0] / wx * widths
    cy = anchors[:, 1] + 0.5 * heights + codes[:, 1] / wy * heights
    half_w = 0.5 * torch.exp(torch.clamp(codes[:, 2] / ww, max=BOX_EXP_CLIP)) * widths
    half_h = 0.5 * torch.exp(torch.clamp(codes[:, 3] / wh, max=BOX_EXP_CLIP)) * heights
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=1)


def _decode_distances(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """FCOS boxes: distances from the anchor's centre to the four sides, in units of the anchor's size."""
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    cx = 0.5 * (anchors[:, 0] + anchors[:, 2])
    cy = 0.5 * (anchors[:, 1] + anchors[:, 3])
    return torch.stack((cx - codes[:, 0] * w, cy - codes[:, 1] * h, cx + codes[:, 2] * w, cy + codes[:, 3] * h), dim=1)


class DetectionHeads(nn.Module):
    """A one-stage torchvision detector without its transform and post-processing (see the module docstring)."""

    task = "detection"

    def __init__(self, detector: nn.Module, input_shape: Sequence[int]):
        super().__init__()
        family = _family(detector)
        if family not in ("ssd", "retinanet", "fcos"):
            raise ModelError(f"detector {type(detector).__name__} is not a one-stage SSD, RetinaNet or FCOS model; "
                             "export its raw heads from your own module (pkg.module:factory)")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4 or shape[:2] != (1, 3):
            raise ModelError(f"detector input shape {shape} must be (1, 3, H, W)")
        self.family = family
        self.backbone = detector.backbone
        self.head = detector.head
        transform = detector.transform
        self.register_buffer("image_mean", torch.tensor(transform.image_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(transform.image_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.example_input_shape = shape
        self.image_size = (shape[2], shape[3])
        self.score_thresh = float(detector.score_thresh)
        self.nms_iou = float(detector.nms_thresh)
        self.topk_candidates = int(detector.topk_candidates)
        self.max_detections = int(detector.detections_per_img)
        self.box_weights = tuple(float(w) for w in getattr(detector.box_coder, "weights", (1.0, 1.0, 1.0, 1.0)))
        self.output_names: tuple[str, ...] = ("cls_logits", "bbox_regression") + (
            ("bbox_ctrness",) if family == "fcos" else ())
        self.output_layer_names = _head_output_layers(self.head, family)
        self.eval()  # an inference wrapper; BatchNorm on a batch of one needs running statistics
        try:
            anchors, per_level = self._make_anchors(detector, shape)
            with torch.no_grad():
                classes = self.forward(torch.zeros(shape))["cls_logits"].shape[-1]
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"detector {type(detector).__name__} fails on an input of shape {shape}: {reason}; "
                             "give a larger input shape") from None
        self.register_buffer("anchors", anchors, persistent=False)
        self.anchors_per_level = per_level
        self.num_classes = int(classes)
        self.postprocess_steps = self._steps()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(x)
        if isinstance(features, torch.Tensor):
            return [features]
        return list(features.values())

    @torch.no_grad()
    def _make_anchors(self, detector: nn.Module, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
        from torchvision.models.detection.image_list import ImageList

        x = torch.zeros(shape)
        features = self._features((x - self.image_mean) / self.image_std)
        anchors = detector.anchor_generator(ImageList(x, [self.image_size]), features)[0]
        per_location = detector.anchor_generator.num_anchors_per_location()
        per_level = tuple(int(f.shape[-2] * f.shape[-1] * k) for f, k in zip(features, per_location))
        if sum(per_level) != anchors.shape[0]:
            raise ModelError(f"detector {type(detector).__name__}: {anchors.shape[0]} anchors do not split evenly over "
                             f"its {len(features)} feature levels")
        return anchors.float(), per_level

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self._features((x - self.image_mean) / self.image_std))
        return {name: out[name] for name in self.output_names}

    def _steps(self) -> str:
        h, w = self.image_size
        anchors = (f"the {self.anchors.shape[0]} anchors (x1, y1, x2, y2 in input pixels, fixed for {h}x{w}; "
                   "the wrapper's `anchors`)")
        select = (f"keep scores > {self.score_thresh:g}, at most {self.topk_candidates} per "
                  + ("class" if self.family == "ssd" else "feature level"))
        tail = (f"clip boxes to {w}x{h}; NMS per class at IoU {self.nms_iou:g}; keep the best {self.max_detections}")
        if self.family == "ssd":
            return (f"scores = softmax(cls_logits) over {self.num_classes} classes, class 0 is background; boxes = "
                    f"bbox_regression decoded against {anchors} as centre/size offsets with weights "
                    f"{self.box_weights} (log sizes clamped at {BOX_EXP_CLIP:.4f}); {select}; {tail}")
        if self.family == "retinanet":
            return (f"scores = sigmoid(cls_logits) per class ({self.num_classes}); boxes = bbox_regression decoded "
                    f"against {anchors} as centre/size offsets with weights {self.box_weights}; levels hold "
                    f"{list(self.anchors_per_level)} anchors; {select}; {tail}")
        return (f"scores = sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness)) per class ({self.num_classes}); boxes = "
                f"anchor centre -/+ bbox_regression (left, top, right, bottom) times the anchor's width/height, "
                f"against {anchors}; levels hold {list(self.anchors_per_level)} anchors; {select}; {tail}")

    def _named(self, outputs: Any) -> dict[str, torch.Tensor]:
        if isinstance(outputs, Mapping):
            missing = [n for n in self.output_names if n not in outputs]
            if missing:
                raise ModelError(f"detector outputs lack '{missing[0]}'; expected {list(self.output_names)}")
            return {n: _as_tensor(outputs[n]) for n in self.output_names}
        if isinstance(outputs, (list, tuple)) and len(outputs) == len(self.output_names):
            return {n: _as_tensor(v) for n, v in zip(self.output_names, outputs)}
        raise ModelError(f"detector outputs must be a dict or a sequence of {list(self.output_names)}")

    @torch.no_grad()
    def postprocess(self, outputs: Any) -> list[dict[str, torch.Tensor]]:
        """Raw head outputs for a batch (dict or sequence in `output_names` order; tensors or numpy arrays) ->
        one dict per image: `boxes` (K, 4) x1, y1, x2, y2 in input pixels, `scores` (K,), `labels` (K,) int64."""
        from torchvision.ops import batched_nms, clip_boxes_to_image

        named = self._named(outputs)
        cls, reg = named["cls_logits"], named["bbox_regression"]
        if cls.ndim != 3 or cls.shape[1] != self.anchors.shape[0]:
            raise ModelError(f"detector cls_logits has shape {tuple(cls.shape)}; expected (N, "
                             f"{self.anchors.shape[0]}, C) for the anchors of a {self.image_size} input")
        anchors = self.anchors.cpu()
        results = []
        for i in range(cls.shape[0]):
            if self.family == "ssd":
                boxes, scores, labels = self._select_ssd(cls[i], reg[i], anchors)
            else:
                boxes, scores, labels = self._select_per_level(cls[i], reg[i], named.get("bbox_ctrness"), i, anchors)
            boxes = clip_boxes_to_image(boxes, self.image_size)
            keep = batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results

    def _select_ssd(self, cls: torch.Tensor, reg: torch.Tensor, anchors: torch.Tensor):
        probs = torch.softmax(cls, dim=-1)
        decoded = _decode_centre_size(reg, anchors, self.box_weights)
        boxes, scores, labels = [], [], []
        for label in range(1, probs.shape[1]):
            score = probs[:, label]
            idx = torch.nonzero(score > self.score_thresh).flatten()
            score, order = score[idx].topk(min(self.topk_candidates, idx.numel()))
            boxes.append(decoded[idx[order]])
            scores.append(score)
            labels.append(torch.full_like(order, label))
        return torch.cat(boxes), torch.cat(scores), torch.cat(labels)

    def _select_per_level(self, cls: torch.Tensor, reg: torch.Tensor, ctr: torch.Tensor | None, i: int,
                          anchors: torch.Tensor):
        probs = torch.sigmoid(cls)
        if self.family == "fcos":
            probs = torch.sqrt(probs * torch.sigmoid(ctr[i]))
        num_classes = probs.shape[1]
        boxes, scores, labels = [], [], []
        start = 0
        for count in self.anchors_per_level:
            level = probs[start:start + count].flatten()
            idx = torch.nonzero(level > self.score_thresh).flatten()
            score, order = level[idx].topk(min(self.topk_candidates, idx.numel()))
            flat = idx[order]
            anchor_idx = start + torch.div(flat, num_classes, rounding_mode="floor")
            if self.family == "fcos":
                boxes.append(_decode_distances(reg[anchor_idx], anchors[anchor_idx]))
            else:
                boxes.append(_decode_centre_size(reg[anchor_idx], anchors[anchor_idx], self.box_weights))
            scores.append(score)
            labels.append(flat % num_classes)
            start += count
        return torch.cat(boxes), torch.cat(scores), torch.cat(labels)


class SegmentationLogits(nn.Module):
    """A torchvision segmenter returning its `out` logits (N, C, H, W) as one tensor; the aux head is dropped."""

    task = "segmentation"
    output_names = ("out",)

    def __init__(self, segmenter: nn.Module, input_shape: Sequence[int]):
        super().__init__()
        if getattr(segmenter, "aux_classifier", None) is not None:
            segmenter.aux_classifier = None  # a training-loss head: not run, not exported
        self.model = segmenter
        self.example_input_shape = tuple(int(d) for d in input_shape)
        classifier = segmenter.classifier
        if hasattr(classifier, "low_classifier") and hasattr(classifier, "high_classifier"):  # LRASPP: two, summed
            self.output_layer_names = ("model.classifier.low_classifier", "model.classifier.high_classifier")
        else:
            self.output_layer_names = (_last_conv(classifier, "model.classifier"),)
        try:
            with torch.no_grad():
                self.num_classes = int(self.eval().forward(torch.zeros(self.example_input_shape)).shape[1])
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"segmenter {type(segmenter).__name__} fails on an input of shape "
                             f"{self.example_input_shape}: {reason}; give a larger input shape") from None
        self.postprocess_steps = (f"out (1, {self.num_classes}, H, W) holds per-pixel class logits at the input size; "
                                  "the class of a pixel is the argmax over axis 1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]

    def postprocess(self, outputs: Any) -> torch.Tensor:
        """Logits (N, C, H, W) -> class per pixel (N, H, W) int64."""
        out = outputs["out"] if isinstance(outputs, Mapping) else outputs
        if isinstance(out, (list, tuple)):
            out = out[0]
        return _as_tensor(out).argmax(1)


def wrap_detector(detector: nn.Module, input_shape: Sequence[int], *, name: str) -> DetectionHeads:
    """The export-friendly form of a torchvision detector, or a one-line `ModelError` for two-stage ones."""
    family = _family(detector)
    if family == "two-stage":
        raise ModelError(
            f"model '{name}' is a two-stage detector: its second stage runs on proposals chosen by NMS inside "
            "forward, so it has no fixed-shape raw heads to export; use a one-stage detector (torchvision:"
            "ssdlite320_mobilenet_v3_large, retinanet_*, fcos_*, ssd300_vgg16) or your own heads (pkg.module:factory)")
    return DetectionHeads(detector, input_shape)


def postprocess_of(module: nn.Module) -> Callable[[Any], Any] | None:
    """The host-side post-processing a model's raw outputs need before a metric scores them (decoding and NMS for a
    detector), or None when the raw outputs are what a metric takes. The one place the pipeline looks it up."""
    fn = getattr(module, "postprocess", None)
    return fn if callable(fn) else None
