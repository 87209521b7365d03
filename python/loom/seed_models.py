"""The PyTorch models of the face chain, as their authors write them, with seeded weights.

* ``MobileNet_GDConv(136)``: a 68-point facial landmark regressor — torchvision's MobileNetV2
  features, a 7x7 depthwise "GDConv" block and a 1x1 convolution to 136 values, (x, y) per point as
  fractions of its 224x224 input.
* ``MobileNetV3_Small(2)``: a frown/normal classifier — torchvision's MobileNetV3-Small with its
  last layer replaced by a 2-class one, fed the Sobel edge map of a brow crop.

No trained weights can be downloaded here, so the weights are seeded (``torch.manual_seed(0)``),
their BatchNorm statistics are recomputed on real face and brow crops (a few forward passes in
train mode) so that outputs depend on the input, and the landmark model's last layer is centred
on a mean 68-point face shape so that its points fall on the face. They are for timing and for
checking that every way of running them agrees; their answers mean nothing. With trained weights,
``module.load_state_dict(torch.load(PATH))`` before exporting gives the same pipeline real
answers.

Only this module's functions import torch; ``import loom`` does not.
"""
import math

import numpy as np

LANDMARK_INPUT = 224   # the landmark model's input side (the GDConv block's 7x7 kernel fixes it)
FROWN_INPUT = 224      # the classifier's input side
FROWN_LABELS = ("normal", "frown")
BROW_POINTS = tuple(range(17, 27))  # the eyebrows among the 68 points
# ImageNet normalisation (RGB, [0, 1] pixels) for the landmark model, as torchvision's transforms.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The face crop the landmark model takes: the detector's box made square and grown by this factor.
FACE_CROP_SCALE = 1.2
# The brow crop: the eyebrow points' bounding box grown by these factors (x, y), kept in the face.
BROW_CROP_SCALE = (1.3, 2.5)


def mean_face_shape():
    """An approximate mean 68-point face (iBUG order) as fractions of a square face crop: [68, 2]."""
    pts = []
    for t in range(17):  # jaw, from the right ear down the chin to the left ear
        a = math.pi * t / 16
        pts.append((0.5 - 0.40 * math.cos(a), 0.42 + 0.46 * math.sin(a)))
    for x0 in (0.17, 0.57):  # eyebrows, five points each, slightly arched
        for k in range(5):
            pts.append((x0 + 0.065 * k, 0.30 - 0.025 * math.sin(math.pi * k / 4)))
    for k in range(4):  # nose bridge
        pts.append((0.5, 0.38 + 0.065 * k))
    for k in range(5):  # nose base
        pts.append((0.42 + 0.04 * k, 0.64 + 0.015 * math.sin(math.pi * k / 4)))
    for cx in (0.32, 0.68):  # eyes, six points each
        for k in range(6):
            a = math.pi * k / 3
            pts.append((cx - 0.07 * math.cos(a), 0.41 - 0.025 * math.sin(a)))
    for k in range(12):  # outer lips
        a = 2 * math.pi * k / 12
        pts.append((0.5 - 0.15 * math.cos(a), 0.77 - 0.06 * math.sin(a)))
    for k in range(8):  # inner lips
        a = 2 * math.pi * k / 8
        pts.append((0.5 - 0.10 * math.cos(a), 0.77 - 0.025 * math.sin(a)))
    return np.asarray(pts, dtype=np.float32)


def _modules():
    """The two architectures (defined on first use: they need torch)."""
    import torch.nn as nn
    import torchvision

    class ConvBlock(nn.Module):
        def __init__(self, inp, oup, k, s, p, dw=False, linear=False):
            super().__init__()
            self.linear = linear
            self.conv = nn.Conv2d(inp, oup, k, s, p, groups=inp if dw else 1, bias=False)
            self.bn = nn.BatchNorm2d(oup)
            if not linear:
                self.prelu = nn.PReLU(oup)

        def forward(self, x):
            x = self.bn(self.conv(x))
            return x if self.linear else self.prelu(x)

    class MobileNet_GDConv(nn.Module):  # noqa: N801  (the authors' name)
        def __init__(self, num_classes):
            super().__init__()
            self.pretrain_net = torchvision.models.mobilenet_v2(weights=None)
            self.base_net = nn.Sequential(*list(self.pretrain_net.children())[:-1])
            self.linear7 = ConvBlock(1280, 1280, (7, 7), 1, 0, dw=True, linear=True)
            self.linear1 = ConvBlock(1280, num_classes, 1, 1, 0, linear=True)
            self.dropout = nn.Dropout(p=0.2)

        def forward(self, x):  # x: [N,3,224,224] f32 -> [N,136]: (x, y) per point in [0, 1]
            x = self.base_net(x)
            x = self.linear7(x)
            x = self.linear1(x)
            x = x.view(x.size(0), -1)
            return x

    def MobileNetV3_Small(num_classes):  # noqa: N802
        net = torchvision.models.mobilenet_v3_small(weights=None)
        net.classifier[3] = nn.Linear(net.classifier[3].in_features, num_classes)
        return net

    return MobileNet_GDConv, MobileNetV3_Small


def MobileNet_GDConv(num_classes=136):  # noqa: N802
    """The landmark architecture, untrained (torch's default initialisation)."""
    return _modules()[0](num_classes)


def MobileNetV3_Small(num_classes=2):  # noqa: N802
    """The classifier architecture, untrained, with its last layer replaced by ``num_classes``."""
    return _modules()[1](num_classes)


# -- preprocessing, as the models were trained (and as pipelines/face-chain.yaml does it) ------------
def crop_region(box, landmarks=None, points=None, square=False, scale=(1.0, 1.0), within_box=False, min_size=8):
    """The region (x1, y1, x2, y2) Loom's ``box_crop`` node cuts for a detection: its ``box``, or
    the bounding box of ``landmarks[points]``; made square, grown about its centre by ``scale``
    (x, y), kept inside ``box`` (``within_box``), and at least ``min_size`` a side (grown back
    into the box rather than out of it)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    rx1, ry1, rx2, ry2 = x1, y1, x2, y2
    if points is not None:
        p = np.asarray(landmarks, np.float64)[list(points)]
        rx1, ry1 = p.min(axis=0)
        rx2, ry2 = p.max(axis=0)
        if not np.all(np.isfinite([rx1, ry1, rx2, ry2])):
            rx1, ry1, rx2, ry2 = x1, y1, x2, y2
    cx, cy = (rx1 + rx2) / 2, (ry1 + ry2) / 2
    w, h = max(0.0, rx2 - rx1), max(0.0, ry2 - ry1)
    if square:
        w = h = max(w, h)
    w, h = w * scale[0], h * scale[1]
    rx1, ry1, rx2, ry2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if within_box:
        rx1, ry1, rx2, ry2 = max(rx1, x1), max(ry1, y1), min(rx2, x2), min(ry2, y2)
        cx, cy = (rx1 + rx2) / 2, (ry1 + ry2) / 2

    def grow(lo, hi, centre, box_lo, box_hi):
        if hi - lo >= min_size:
            return lo, hi
        lo, hi = centre - min_size / 2, centre + min_size / 2
        if within_box and box_hi - box_lo >= min_size:
            shift = box_lo - lo if lo < box_lo else (box_hi - hi if hi > box_hi else 0.0)
            lo, hi = lo + shift, hi + shift
        return lo, hi

    rx1, rx2 = grow(rx1, rx2, cx, x1, x2)
    ry1, ry2 = grow(ry1, ry2, cy, y1, y2)
    return rx1, ry1, rx2, ry2


def cut(image, region):
    """The crop of ``image`` over ``region`` in whole pixels inside the image (at least 1x1), as
    ``box_crop`` cuts it; returns the crop (a view) and its top-left corner."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = region

    def clamp(v, lo, hi):
        return lo if not v > lo else (int(v) if v < hi else hi)

    ix1, iy1 = clamp(math.floor(x1), 0, w - 1), clamp(math.floor(y1), 0, h - 1)
    ix2, iy2 = clamp(math.ceil(x2), ix1 + 1, w), clamp(math.ceil(y2), iy1 + 1, h)
    return image[iy1:iy2, ix1:ix2], (ix1, iy1)


def face_crop(image, box):
    """The landmark model's crop of a face (square, grown by FACE_CROP_SCALE)."""
    return cut(image, crop_region(box, square=True, scale=(FACE_CROP_SCALE, FACE_CROP_SCALE)))


def brow_crop(image, box, landmarks):
    """The classifier's crop: the eyebrow points' box grown by BROW_CROP_SCALE, inside the face."""
    return cut(image, crop_region(box, landmarks, BROW_POINTS, scale=BROW_CROP_SCALE, within_box=True))


def landmark_input(crops):
    """Face crops (BGR uint8) -> the landmark model's input, [N,3,224,224] f32."""
    import cv2
    out = np.empty((len(crops), 3, LANDMARK_INPUT, LANDMARK_INPUT), np.float32)
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    for i, c in enumerate(crops):
        rgb = cv2.cvtColor(cv2.resize(c, (LANDMARK_INPUT, LANDMARK_INPUT), interpolation=cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        out[i] = (rgb.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
    return out


def sobel(image):
    """The 8-bit gradient magnitude of an image's gray levels (3x3 Sobel), as Loom's
    ``filter: sobel``."""
    import cv2
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.clip(np.rint(cv2.magnitude(dx, dy)), 0, 255).astype(np.uint8)


def frown_input(crops):
    """Brow crops (BGR uint8) -> the classifier's input: the Sobel edge map of each crop resized to
    224x224, in all three channels, scaled to [-1, 1]: [N,3,224,224] f32."""
    import cv2
    out = np.empty((len(crops), 3, FROWN_INPUT, FROWN_INPUT), np.float32)
    for i, c in enumerate(crops):
        edges = sobel(cv2.resize(c, (FROWN_INPUT, FROWN_INPUT), interpolation=cv2.INTER_LINEAR))
        out[i] = (edges.astype(np.float32) - 127.5) / 127.5
    return out


def landmarks_to_image(output, corners, sizes):
    """The landmark model's output [N,136] -> points in the frame: [N,68,2], through each crop's
    resize (``sizes``: (w, h) per crop) and place (``corners``: (x, y) per crop)."""
    pts = np.asarray(output, np.float64).reshape(len(corners), -1, 2).copy()
    for i, ((x0, y0), (w, h)) in enumerate(zip(corners, sizes)):
        pts[i, :, 0] = pts[i, :, 0] * w + x0
        pts[i, :, 1] = pts[i, :, 1] * h + y0
    return pts


# -- seeding and calibration -------------------------------------------------------------------------
def calibrate_batchnorm(module, batches):
    """Recomputes every BatchNorm's running mean and variance as the plain average over
    ``batches`` (forward passes in train mode, no gradients), then puts the module in eval mode."""
    import torch
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for b in batches:
            module(torch.as_tensor(b))
    for m in norms:
        m.momentum = 0.1
    module.eval()
    return module


def calibration_crops(data_dir, frames=96):
    """Real face and brow crops from ``data_dir`` (Megamind.avi's faces and messi5.jpg's), found by
    BlazeFace through Loom (pipelines/faces.yaml); brows placed from the detector's eye keypoints.
    Returns (face crops, brow crops), BGR uint8."""
    import os

    import cv2

    from . import Pipeline
    root = os.path.dirname(os.path.abspath(data_dir.rstrip("/")))
    images = []
    video = cv2.VideoCapture(os.path.join(data_dir, "Megamind.avi"))
    index = 0
    while len(images) < frames:
        ok, frame = video.read()
        if not ok:
            break
        if index % 3 == 0:
            images.append(frame)
        index += 1
    messi = cv2.imread(os.path.join(data_dir, "messi5.jpg"))
    if messi is not None:
        images.append(messi)
    faces, brows = [], []
    detector = Pipeline(os.path.join(root, "pipelines", "faces.yaml"), cores=1)
    for i, image in enumerate(images):
        detector.submit(image, f"calibration#{i}")
    detector.finish()
    for image, record in zip(images, detector.results(wait=True)):
        for face in record.get("faces", []):
            box = [float(v) for v in face["box"]]
            faces.append(face_crop(image, box)[0])
            (rx, ry), (lx, ly) = face["keypoints"][0], face["keypoints"][1]
            d = max(math.hypot(lx - rx, ly - ry), 4.0)
            eye_y = (ry + ly) / 2
            region = (min(rx, lx) - 0.3 * d, eye_y - 0.55 * d, max(rx, lx) + 0.3 * d, eye_y - 0.1 * d)
            brows.append(cut(image, crop_region(box, [region[:2], region[2:]], (0, 1), within_box=True))[0])
    if not faces:
        raise RuntimeError(f"no face found in {data_dir} to calibrate the seed models on")
    return faces, brows


def _batches(x, size=16):
    """``x`` in batches of ``size``; a short last batch joins the one before (a BatchNorm after
    global pooling needs more than one row in train mode)."""
    starts = list(range(0, len(x), size))
    if len(starts) > 1 and len(x) - starts[-1] < size:
        starts.pop()
    return [x[s:(starts[i + 1] if i + 1 < len(starts) else len(x))] for i, s in enumerate(starts)]


def seeded_landmark_model(face_crops):
    """MobileNet_GDConv(136): seed 0, BatchNorm statistics from ``face_crops``, and its last
    BatchNorm centred on :func:`mean_face_shape` (scale 0.015 around it)."""
    import torch
    torch.manual_seed(0)
    net = MobileNet_GDConv(136)
    calibrate_batchnorm(net, _batches(landmark_input(face_crops)))
    with torch.no_grad():
        net.linear1.bn.weight.fill_(0.015)
        net.linear1.bn.bias.copy_(torch.from_numpy(mean_face_shape().reshape(-1)))
    return net.eval()


def seeded_frown_model(brow_crops):
    """MobileNetV3_Small(2): seed 0, BatchNorm statistics from ``brow_crops``, and its last layer
    scaled so that its logits over those crops have mean 0 and standard deviation 1 (at torch's
    initial scale every crop would score 0.50 for both classes)."""
    import torch
    torch.manual_seed(0)
    net = MobileNetV3_Small(2)
    batches = _batches(frown_input(brow_crops))
    calibrate_batchnorm(net, batches)
    with torch.no_grad():
        logits = torch.cat([net(torch.as_tensor(b)) for b in batches])
        spread = float(logits.std(0).mean()) or 1.0
        head = net.classifier[3]
        head.weight /= spread
        head.bias.copy_((head.bias - logits.mean(0)) / spread)
    return net


def face_models(data_dir):
    """Both seed models of the face chain, seeded and calibrated on ``data_dir``'s faces."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic sums, the same weights on every run
    try:
        faces, brows = calibration_crops(data_dir)
        return seeded_landmark_model(faces), seeded_frown_model(brows)
    finally:
        torch.set_num_threads(threads)
