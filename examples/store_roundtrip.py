"""Write a small experiment's outputs through a store and read them back (the README's first command).

Run: python examples/store_roundtrip.py [URL]   (default: the configured root, ./runs)
"""

from __future__ import annotations

import json
import sys

import numpy as np

from expstore import default_url, open_store


def main(url: str) -> None:
    store = open_store(url)
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((256, 64)).astype(np.float32)
    config = {"experiment": "roundtrip", "lr": 0.01, "seed": 0}

    store.write("roundtrip/config.json", json.dumps(config, indent=2).encode())
    store.write("roundtrip/weights.f32", weights)
    for step in range(3):
        line = json.dumps({"step": step, "loss": float(1.0 / (step + 1))}) + "\n"
        if store.supports_append:
            store.append("roundtrip/metrics.jsonl", line.encode())

    back = np.frombuffer(store.read("roundtrip/weights.f32"), dtype=np.float32).reshape(weights.shape)
    assert np.array_equal(back, weights), "weights did not round-trip"
    assert json.loads(store.read("roundtrip/config.json")) == config

    print(f"store: {store!r}")
    for key in store.list("roundtrip/"):
        print(f"  {key:32} {store.size(key):>8} bytes")
    print("read back: config and weights identical")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else default_url())
