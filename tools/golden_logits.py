#!/usr/bin/env python3
"""Golden next-token logits for the real GGUF models, from an independent
implementation: Python `transformers` (+ torch, CPU, float32) loading the same
GGUF file (it dequantizes the weights itself and applies its own Gemma 3 /
Llama conventions).

Usage: python3 tools/golden_logits.py [CACHE_DIR]   (default ~/.cache/linear-lens)
Writes crates/lens-engine/tests/fixtures/golden_logits/<model>.json (prompts, token ids, top-10)
and <model>.f32 (the full logit vectors, little-endian f32, prompt after prompt).
Needs: pip install torch transformers gguf.  CI does not run this.
"""
import json, os, sys
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "The bridge out of Marin is the",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "Once upon a time, in a small village nestled between two mountains, there lived an old clockmaker who",
]
MODELS = {
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
}


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "LINEAR_LENS_MODELS", os.path.expanduser("~/.cache/linear-lens"))
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lens-engine", "tests", "fixtures", "golden_logits")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_grad_enabled(False)
    for model_id, fname in MODELS.items():
        tok = AutoTokenizer.from_pretrained(cache, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(cache, gguf_file=fname, dtype=torch.float32)
        model.eval()
        entries, blobs = [], []
        for p in PROMPTS:
            ids = tok(p)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0, -1].to(torch.float32).numpy()
            top = np.argsort(-logits)[:10]
            entries.append({"prompt": p, "token_ids": ids, "argmax": int(top[0]),
                            "top10": [[int(i), float(logits[i])] for i in top]})
            blobs.append(logits.astype("<f4").tobytes())
        meta = {"reference": "transformers %s + torch %s, float32, CPU, AutoModelForCausalLM(gguf_file=%s)"
                % (__import__("transformers").__version__, torch.__version__, fname),
                "vocab": int(len(logits)), "entries": entries}
        with open(os.path.join(out_dir, model_id + ".json"), "w") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
        with open(os.path.join(out_dir, model_id + ".f32"), "wb") as f:
            f.write(b"".join(blobs))
        print(model_id, [e["argmax"] for e in entries])


if __name__ == "__main__":
    main()
