#!/usr/bin/env python3
"""The OCR pipeline (PP-OCR v4: detector -> a crop per text line -> angle classifier ->
recogniser) over a folder of text images, printing what it reads.

    python3 examples/python/ocr_folder.py [FOLDER_OR_GLOB]   (default: the text images in data/)
"""
import os
import sys

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "data", "*[Tt]ext*")
    ocr = loom.Pipeline(os.path.join(ROOT, "pipelines", "ocr.yaml"))
    for record in ocr.run(source):
        print(f"== {os.path.basename(record['source'])}")
        if "error" in record:
            print(f"error: {record['error']}")
            continue
        for line in record["text"]:
            print(line["text"])


if __name__ == "__main__":
    main()
