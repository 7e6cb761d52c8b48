#!/usr/bin/env python3
"""Golden token ids for the two real GGUF models, from an independent tokenizer:
Python `transformers` building its fast tokenizer from the GGUF metadata
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)`).

Usage: python3 tools/golden_tokens.py [CACHE_DIR]  (default ~/.cache/linear-lens)
Writes crates/lens-engine/tests/fixtures/golden_tokens.json. Needs: pip install transformers gguf (no torch).
"""
import json, os, sys
from transformers import AutoTokenizer

STRINGS = [
    "The capital of France is",
    "The bridge out of Marin is the",
    "  leading spaces and  double  spaces",
    "line one\nline two\n\n\ttabbed\tvalue",
    "Café, naïve résumé, Ångström, Straße",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 😀🚀👩‍💻 and ❤️",
    "fn main() {\n    println!(\"{}\", x[0] + 1);\n}",
    "Numbers: 3.14159, 1,000,000 and 2026-11-25 at 12:30",
    "     ",
    "a",
    "Mixed 中文 and English, with punctuation!?…",
    "<b>html</b> &amp; http://example.com/path?q=1",
    "UPPER lower MiXeD 123abc",
]

MODELS = {
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
}


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "LINEAR_LENS_MODELS", os.path.expanduser("~/.cache/linear-lens"))
    out = {"reference": "transformers %s AutoTokenizer(gguf_file=...)" % __import__("transformers").__version__,
           "strings": STRINGS, "models": {}}
    for model_id, fname in MODELS.items():
        tok = AutoTokenizer.from_pretrained(cache, gguf_file=fname)
        out["models"][model_id] = [tok(s)["input_ids"] for s in STRINGS]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "crates", "lens-engine", "tests", "fixtures", "golden_tokens.json")
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
