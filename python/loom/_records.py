"""Pipeline records as Python dicts: JSON from the engine, geometry as NumPy arrays."""
import json

import numpy as np

_ARRAY_KEYS = ("box", "quad", "keypoints", "landmarks")


def _convert(value):
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return [{k: (np.asarray(v, dtype=np.float32) if k in _ARRAY_KEYS else v) for k, v in d.items()}
                    for d in value]
        if value and all(isinstance(v, list) and len(v) == 5 and all(isinstance(x, (int, float)) for x in v)
                         for v in value):
            return np.asarray(value, dtype=np.float32)  # line segments: [N, 5] x1 y1 x2 y2 score
    return value


def record(item):
    """(json, timings) from the engine -> {"frame", "source", each node's output, "timings", "error"?}."""
    text, timings = item
    r = json.loads(text)
    out = {k: _convert(v) for k, v in r.items() if k != "timings_ms"}
    out["timings"] = timings
    return out
