"""YOLOv5 (n, s, m, l) written in PyTorch after the published v6 design, with seeded weights.

The network: a CSP backbone of C3 blocks, SPPF, a PAN neck and a detect head on strides 8, 16 and
32 with three anchors each; SiLU activations; depth and width multipliers per size (n 0.33/0.25,
s 0.33/0.50, m 0.67/0.75, l 1.0/1.0). YOLOv5m has 21.2 M parameters.

``forward`` returns the head's raw maps, one per stride: [N, 3 * (5 + classes), H/s, W/s] each.
Decoding (sigmoid, grid and anchors, objectness x class score, class-wise NMS) is Loom's ``yolo``
node's work, with the anchors and strides from the pipeline file (pipelines/detect-folder.yaml):
it decodes only the anchors whose objectness passes the threshold, where an in-graph decode would
apply a sigmoid to every value of every anchor.

Seeded weights (``torch.manual_seed(0)``, BatchNorm statistics from real photos, the head's
weights scaled so that its logits vary by 0.5 about the objectness and class biases the published
design starts from — about 8 objects per 640 image — so that a seeded model yields next to no
boxes, and NMS does not dominate) are for timing only: the boxes mean nothing.
"""
import math

ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)
SIZES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0)}


def _make_divisible(x, divisor=8):
    return int(math.ceil(x / divisor) * divisor)


def _modules():
    import torch
    import torch.nn as nn

    class Conv(nn.Module):
        """Conv2d (no bias) + BatchNorm + SiLU, 'same' padding."""

        def __init__(self, c1, c2, k=1, s=1, p=None):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
            self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c1, c2, shortcut=True):
            super().__init__()
            self.cv1 = Conv(c1, c2, 1)
            self.cv2 = Conv(c2, c2, 3)
            self.add = shortcut and c1 == c2

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C3(nn.Module):
        """CSP bottleneck with three convolutions."""

        def __init__(self, c1, c2, n=1, shortcut=True):
            super().__init__()
            c_ = c2 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c1, c_, 1)
            self.cv3 = Conv(2 * c_, c2, 1)
            self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

        def forward(self, x):
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            c_ = c1 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c_ * 4, c2, 1)
            self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.m(x)
            y2 = self.m(y1)
            return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))

    class YOLOv5(nn.Module):
        """Input [N,3,H,W] f32 RGB in [0, 1], H and W multiples of 32 -> three raw maps
        [N, 3*(5+classes), H/8, W/8], [.., H/16, W/16], [.., H/32, W/32]."""

        def __init__(self, size="s", classes=80):
            super().__init__()
            gd, gw = SIZES[size]

            def n(x):
                return max(round(x * gd), 1)

            def c(x):
                return _make_divisible(x * gw)

            self.classes = classes
            self.b0 = Conv(3, c(64), 6, 2, 2)           # P1/2
            self.b1 = Conv(c(64), c(128), 3, 2)         # P2/4
            self.b2 = C3(c(128), c(128), n(3))
            self.b3 = Conv(c(128), c(256), 3, 2)        # P3/8
            self.b4 = C3(c(256), c(256), n(6))
            self.b5 = Conv(c(256), c(512), 3, 2)        # P4/16
            self.b6 = C3(c(512), c(512), n(9))
            self.b7 = Conv(c(512), c(1024), 3, 2)       # P5/32
            self.b8 = C3(c(1024), c(1024), n(3))
            self.b9 = SPPF(c(1024), c(1024), 5)
            self.h10 = Conv(c(1024), c(512), 1, 1)
            self.h13 = C3(c(1024), c(512), n(3), False)
            self.h14 = Conv(c(512), c(256), 1, 1)
            self.h17 = C3(c(512), c(256), n(3), False)  # P3 out
            self.h18 = Conv(c(256), c(256), 3, 2)
            self.h20 = C3(c(512), c(512), n(3), False)  # P4 out
            self.h21 = Conv(c(512), c(512), 3, 2)
            self.h23 = C3(c(1024), c(1024), n(3), False)  # P5 out
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
            outputs = 3 * (5 + classes)
            self.detect = nn.ModuleList(nn.Conv2d(ch, outputs, 1) for ch in (c(256), c(512), c(1024)))
            for conv, stride in zip(self.detect, STRIDES):  # the published initial biases
                b = conv.bias.view(3, -1)
                with torch.no_grad():
                    b[:, 4] += math.log(8 / (640 / stride) ** 2)        # ~8 objects per 640x640 image
                    b[:, 5:] += math.log(0.6 / (classes - 0.99))        # classes about equally likely

        def forward(self, x):
            x = self.b2(self.b1(self.b0(x)))
            p3 = self.b4(self.b3(x))
            p4 = self.b6(self.b5(p3))
            p5 = self.b9(self.b8(self.b7(p4)))
            h10 = self.h10(p5)
            h14 = self.h14(self.h13(torch.cat((self.up(h10), p4), 1)))
            out3 = self.h17(torch.cat((self.up(h14), p3), 1))
            out4 = self.h20(torch.cat((self.h18(out3), h14), 1))
            out5 = self.h23(torch.cat((self.h21(out4), h10), 1))
            return tuple(conv(o) for conv, o in zip(self.detect, (out3, out4, out5)))

    return YOLOv5


def YOLOv5(size="s", classes=80):  # noqa: N802
    """An untrained YOLOv5 of ``size`` n, s, m or l."""
    if size not in SIZES:
        raise ValueError(f"YOLOv5 size must be one of {', '.join(SIZES)}, got {size!r}")
    return _modules()(size, classes)


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def letterbox(image, size=640, stride=32, pad=114):
    """YOLO's letterbox, as Loom's ``letterbox`` node does it: the longer side scaled to ``size``,
    the aspect kept, each side padded (centred) up to a multiple of ``stride`` with ``pad``.
    Returns the padded BGR image, the scale and the (left, top) padding."""
    import cv2
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    uw, uh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    tw, th = int(math.ceil(uw / stride) * stride), int(math.ceil(uh / stride) * stride)
    left, top = (tw - uw) // 2, (th - uh) // 2
    resized = cv2.resize(image, (uw, uh), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(resized, top, th - uh - top, left, tw - uw - left, cv2.BORDER_CONSTANT,
                             value=(pad, pad, pad))
    return out, r, (left, top)


def to_input(letterboxed):
    """A letterboxed BGR image -> [1,3,H,W] f32 RGB in [0, 1]."""
    import numpy as np
    return (letterboxed[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0).copy()


def calibration_images(data_dir, size=640, count=8):
    """Real photos and frames from ``data_dir``, letterboxed to ``size`` as at inference, each
    [1,3,H,W]: the BatchNorm statistics' inputs."""
    import os

    import cv2
    images = []
    for name in ("messi5.jpg", "licenseplate_motion.jpg", "text_motion.jpg", "imageTextN.png"):
        image = cv2.imread(os.path.join(data_dir, name))
        if image is not None:
            images.append(image)
    video = cv2.VideoCapture(os.path.join(data_dir, "vtest.avi"))
    while len(images) < count:
        ok, frame = video.read()
        if not ok:
            break
        for _ in range(20):
            video.grab()
        images.append(frame)
    return [to_input(letterbox(i, size)[0]) for i in images[:count]]


def seeded_yolov5(size, data_dir, classes=80):
    """YOLOv5 ``size`` with seed-0 weights, BatchNorm statistics from ``data_dir``'s photos, and the
    published initial biases of its head."""
    import numpy as np
    import torch

    from .seed_models import calibrate_batchnorm
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = YOLOv5(size, classes)
        batches = calibration_images(data_dir, 640)  # one image each: their shapes differ
        calibrate_batchnorm(net, batches)
        # The head's weights scaled so that each stride's logits vary by 0.5 (standard deviation
        # over the same photos) about the published biases: at torch's initial scale they vary by
        # 1.3-1.6, and at 1920 px hundreds of anchors pass the threshold with saturated scores.
        spread = {}
        hooks = [conv.register_forward_hook(lambda m, i, o, k=k: spread.setdefault(k, []).append(
            (o - m.bias.view(1, -1, 1, 1)).std().item())) for k, conv in enumerate(net.detect)]
        with torch.no_grad():
            for b in batches:
                net(torch.as_tensor(b))
            for h in hooks:
                h.remove()
            for k, conv in enumerate(net.detect):
                conv.weight *= 0.5 / (float(np.mean(spread[k])) or 1.0)
        return net
    finally:
        torch.set_num_threads(threads)
