#!/usr/bin/env python3
"""The face chain with Loom: faces (BlazeFace) -> 68 landmarks per face (a PyTorch MobileNet_GDConv)
-> frown or normal from the eyebrows' edge map (a PyTorch MobileNetV3-Small).

    python3 examples/python/face_chain.py [VIDEO] [--out out/face_chain.avi] [--limit N]
The two PyTorch modules are exported once by loom.from_torch (cached) and replace the pipeline's
models by name; the frames come from this script's own cv2 loop. The weights here are seeded (for
timing: the labels mean nothing); load trained ones with load_state_dict and nothing else changes.
"""
import argparse
import os
import cv2
import torch

import loom
from loom import seed_models as sm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def torch_models():
    landmarks, frown = sm.MobileNet_GDConv(136), sm.MobileNetV3_Small(2)
    landmarks.load_state_dict(torch.load(os.path.join(ROOT, "models", "seeded_landmarks_gdconv.pt")))
    frown.load_state_dict(torch.load(os.path.join(ROOT, "models", "seeded_frown_mnv3small.pt")))
    x = torch.zeros(1, 3, 224, 224)
    return {"landmarks": loom.from_torch(landmarks, x, name="landmarks"),
            "frown": loom.from_torch(frown, x, name="frown")}


def draw(frame, faces):
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face["box"])
        colour = (0, 0, 255) if face["label"] == "frown" else (0, 200, 0)
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 2)
        for x, y in face["landmarks"]:
            cv2.circle(frame, (int(x), int(y)), 1, (255, 255, 0), -1)
        cv2.putText(frame, f"{face['label']} {face['label_score']:.2f}", (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_DUPLEX, 0.6, colour, 1, cv2.LINE_AA)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=os.path.join(ROOT, "data", "Megamind.avi"))
    parser.add_argument("--out", default="out/face_chain.avi")
    parser.add_argument("--limit", type=int, default=0, help="at most this many frames (0: all)")
    args = parser.parse_args()
    chain = loom.Pipeline(os.path.join(ROOT, "pipelines", "face-chain.yaml"), models=torch_models())
    video = cv2.VideoCapture(args.video)
    frames, writer, counts = {}, None, {"normal": 0, "frown": 0}

    def write(record):
        nonlocal writer
        frame = frames.pop(record["frame"])
        draw(frame, record["faces"])
        for face in record["faces"]:
            counts[face["label"]] += 1
        if writer is None:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), 25, frame.shape[1::-1])
        writer.write(frame)

    submitted = 0
    while not args.limit or submitted < args.limit:
        ok, frame = video.read()
        if not ok:
            break
        frames[chain.submit(frame)] = frame   # waits while the pipeline's frames in flight are full
        submitted += 1
        for record in chain.results():        # whatever is done, in frame order
            write(record)
    chain.finish()
    for record in chain.results(wait=True):
        write(record)
    writer and writer.release()
    print(f"{counts['normal']} normal and {counts['frown']} frowning faces; annotated video: {args.out}")


if __name__ == "__main__":
    main()
