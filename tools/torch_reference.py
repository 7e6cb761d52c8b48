#!/usr/bin/env python3
"""The detached Jacobian the way the paper's own code computes it: Python
`transformers` (+ torch, CPU) with the frozen quantities `.detach()`ed by
monkeypatching the modules' forward methods, then ONE call of
`torch.autograd.functional.jacobian(f, x, vectorize=True)`.

This is the baseline for `tools/bench-vs-torch.sh`, not a part of the engine.
It differs from the author's code in one deliberate way: everything on the
linear path stays float64 (transformers' RMSNorms upcast to float32, and so
does the author's modified copy, which is why the paper's f64 run reports
~1e-7 instead of ~1e-15; see /work/shared/METHOD.md, "f64 everywhere").

    f : x (input embeddings as the first decoder layer receives them, [n, d])
        -> y (final-normed hidden state of the last position, [d])

frozen (detached): every RMSNorm's rsqrt(mean(x^2)+eps), the gate activation
act(gate_proj(x)), and the attention probabilities (so q, k, their norms and
RoPE carry no gradient).

Usage:
  python3 tools/torch_reference.py [--model gemma-3-270m|smollm2-135m|PATH.gguf]
      [--prompt TEXT] [--threads N] [--compare OURS.npy] [--save-jacobian J.npy]
Prints one JSON object on stdout:
  model, n_tokens, threads, jacobian_s (the jacobian call only), jacobian_cpu_s,
  reconstruction_rel_error (|sum_i J_i x_i - y| / |y|), peak_rss_mib (ru_maxrss),
  token_ids, reference; with --compare OURS.npy (float64 [n, d, d],
  ours[i][o][c] = dy_o/dx_{i,c}) also rel_diff_vs_ours (|J_torch - J_ours|_F /
  |J_torch|_F) and ours_reconstruction_rel_error (ours applied to torch's x, y).

Float32 in transformers that this script removes (all measured on these models):
  - Gemma3RMSNorm / LlamaRMSNorm compute in float32 and cast back: on the linear
    path, reconstruction ~6e-8 instead of ~2e-15 (the paper's f64 problem);
  - the RoPE table (inv_freq, cos, sin) and the eager softmax are float32: they
    feed only frozen quantities, so reconstruction stays ~1e-15, but J moves by
    ~1e-7 relative to an all-f64 J (e.g. ours);
  - transformers >= 5.2x may keep GGUF weights packed (GgufLinear, float32
    matmuls): asked off with GgufConfig(dequantize=True), and checked.
Gemma 3: embed_tokens(ids) is Gemma3TextScaledWordEmbedding, which already
multiplies by sqrt(hidden_size) (an f64 buffer when loaded in f64; asserted).
Needs: pip install torch transformers gguf.  CI does not run this.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported

import numpy as np
import torch

MODELS = {
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
}


def resolve_model(spec):
    """(directory, gguf file name, display name) for an id or a path."""
    if spec in MODELS:
        cache = os.environ.get("LINEAR_LENS_MODELS", os.path.expanduser("~/.cache/linear-lens"))
        return cache, MODELS[spec], spec
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
        sys.exit(f"torch_reference: no model file {path} (ids: {', '.join(MODELS)})")
    return os.path.dirname(path), os.path.basename(path), spec


# ----------------------------------------------------------------------------
# The patches: frozen parts detached, everything float64 (no float32 upcasts).
# ----------------------------------------------------------------------------

def detached_eager_attention(module, query, key, value, attention_mask, scaling=None,
                             dropout=0.0, softcap=None, **kwargs):
    """transformers' eager attention with the probabilities detached and the
    softmax in the query dtype (the original does it in float32)."""
    from transformers.models.llama.modeling_llama import repeat_kv

    if scaling is None:
        scaling = module.head_dim ** -0.5
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        attn_weights = torch.tanh(attn_weights / softcap) * softcap
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1).detach()
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def gemma3_rmsnorm_forward(self, x):
    # Gemma: x * r * (1 + w); the original computes it in float32.
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps).detach()
    return (x * r) * (1.0 + self.weight)


def llama_rmsnorm_forward(self, x):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon).detach()
    return self.weight * (x * r)


def gated_mlp_forward(self, x):
    return self.down_proj(self.act_fn(self.gate_proj(x)).detach() * self.up_proj(x))


def f64_inv_freq(module, config, layer_type=None):
    """The RoPE inverse frequencies in float64 (transformers builds them, and
    the cos/sin table, in float32). Only the "default" rope type is rebuilt;
    others keep transformers' values, upcast."""
    if layer_type is None:
        params, rope_type, inv = config.rope_parameters, module.rope_type, module.inv_freq
    else:
        params = config.rope_parameters[layer_type]
        rope_type = module.rope_type[layer_type]
        inv = getattr(module, f"{layer_type}_inv_freq")
    if rope_type != "default":
        return inv.to(torch.float64)
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = float(params["rope_theta"])
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def rope_table(inv_freq, scaling, x, position_ids):
    freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)


def gemma3_rotary_forward(self, x, position_ids, layer_type):
    inv = self._inv_freq_f64[layer_type]
    return rope_table(inv, getattr(self, f"{layer_type}_attention_scaling"), x, position_ids)


def llama_rotary_forward(self, x, position_ids):
    return rope_table(self._inv_freq_f64, self.attention_scaling, x, position_ids)


def patch_transformers():
    """Monkeypatch the Gemma 3 and Llama module classes (as the paper's code
    patches its modules' forward methods)."""
    from transformers.models.gemma3 import modeling_gemma3 as g3
    from transformers.models.llama import modeling_llama as ll

    g3.Gemma3RMSNorm.forward = gemma3_rmsnorm_forward
    g3.Gemma3MLP.forward = gated_mlp_forward
    g3.Gemma3RotaryEmbedding.forward = gemma3_rotary_forward
    g3.eager_attention_forward = detached_eager_attention
    ll.LlamaRMSNorm.forward = llama_rmsnorm_forward
    ll.LlamaMLP.forward = gated_mlp_forward
    ll.LlamaRotaryEmbedding.forward = llama_rotary_forward
    ll.eager_attention_forward = detached_eager_attention


def prepare_rotary(model):
    from transformers.models.gemma3 import modeling_gemma3 as g3
    from transformers.models.llama import modeling_llama as ll

    for m in model.modules():
        if isinstance(m, g3.Gemma3RotaryEmbedding):
            m._inv_freq_f64 = {lt: f64_inv_freq(m, m.config, lt) for lt in m.rope_type}
        elif isinstance(m, ll.LlamaRotaryEmbedding):
            m._inv_freq_f64 = f64_inv_freq(m, m.config)


def check_patched(model):
    """Every RMSNorm / MLP / attention in the model must be one of the patched
    classes (a Qwen 3 or other architecture would silently go unpatched)."""
    from transformers.models.gemma3 import modeling_gemma3 as g3
    from transformers.models.llama import modeling_llama as ll

    known = (g3.Gemma3RMSNorm, g3.Gemma3MLP, g3.Gemma3Attention, g3.Gemma3RotaryEmbedding,
             ll.LlamaRMSNorm, ll.LlamaMLP, ll.LlamaAttention, ll.LlamaRotaryEmbedding)
    for name, m in model.named_modules():
        cls = type(m).__name__
        if "Linear" in cls and type(m) is not torch.nn.Linear:
            sys.exit(f"torch_reference: {name} is a {cls}, not a dense torch.nn.Linear")
        if any(k in cls for k in ("RMSNorm", "MLP", "Attention", "Rotary")) and not isinstance(m, known):
            sys.exit(f"torch_reference: module {name} ({cls}) is not patched; "
                     "only Gemma 3 and Llama models are supported")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--prompt", default="The bridge out of Marin is the")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compare", metavar="OURS.npy")
    ap.add_argument("--save-jacobian", metavar="J.npy",
                    help="write torch's J as float64 [n, d, d] (the layout --compare reads)")
    ap.add_argument("--svd-fixture", metavar="FILE.json",
                    help="write the singular values of J_cat = [J_1 ... J_n] and of each J_i "
                         "(torch.linalg.svdvals, float64) as a test fixture")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    transformers.logging.set_verbosity_error()

    directory, fname, display = resolve_model(args.model)
    patch_transformers()
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=fname)
    load = dict(gguf_file=fname, dtype=torch.float64, attn_implementation="eager")
    try:
        # transformers >= 5.2x can keep GGUF weights packed and multiply in
        # float32 (GgufLinear); ask for plain dense float64 weights.
        from transformers import GgufConfig
        load["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(directory, **load)
    model.eval()
    model.requires_grad_(False)
    check_patched(model)
    prepare_rotary(model)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    bad = [n for n, p in list(model.named_parameters()) + list(model.named_buffers())
           if p.is_floating_point() and p.dtype != torch.float64 and "inv_freq" not in n]
    if bad:
        sys.exit(f"torch_reference: not float64: {bad[:5]}")

    ids = tok(args.prompt, return_tensors="pt")["input_ids"]
    base = model.model
    with torch.no_grad():
        x = base.embed_tokens(ids)[0].to(torch.float64)
        # Gemma 3's Gemma3TextScaledWordEmbedding multiplies by sqrt(d) itself.
        if type(base.embed_tokens).__name__ == "Gemma3TextScaledWordEmbedding":
            want = base.embed_tokens.weight[ids[0]] * math.sqrt(model.config.hidden_size)
            assert torch.equal(x, want), "embed_tokens(ids) != E[ids] * sqrt(d) in f64"
    x = x.detach().clone()

    def f(emb):
        out = base(inputs_embeds=emb[None], use_cache=False)
        return out.last_hidden_state[0, -1]

    with torch.no_grad():
        y = f(x)
    t0, c0 = time.perf_counter(), time.process_time()
    J = torch.autograd.functional.jacobian(f, x, vectorize=True)  # [d, n, d]
    jacobian_s, jacobian_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    recon = torch.einsum("onc,nc->o", J, x)
    report = {
        "model": display,
        "n_tokens": int(ids.shape[1]),
        "threads": torch.get_num_threads(),
        "jacobian_s": jacobian_s,
        # CPU seconds of all threads: under load, jacobian_s grows, this less.
        "jacobian_cpu_s": jacobian_cpu_s,
        "reconstruction_rel_error": float(torch.linalg.norm(recon - y) / torch.linalg.norm(y)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "token_ids": ids[0].tolist(),
        "reference": f"transformers {transformers.__version__} + torch {torch.__version__}, float64, "
                     f"CPU, eager attention, autograd.functional.jacobian(vectorize=True)",
    }
    J_ours_layout = J.permute(1, 0, 2).contiguous()  # [n, d, d], [i][o][c]
    if args.save_jacobian:
        np.save(args.save_jacobian, J_ours_layout.numpy())
    if args.compare:
        ours = np.load(args.compare)
        if ours.dtype != np.float64 or ours.shape != tuple(J_ours_layout.shape):
            sys.exit(f"torch_reference: {args.compare} is {ours.dtype} {ours.shape}, "
                     f"want float64 {tuple(J_ours_layout.shape)}")
        ours = torch.from_numpy(ours)
        report["rel_diff_vs_ours"] = float(torch.linalg.norm(J_ours_layout - ours)
                                           / torch.linalg.norm(J_ours_layout))
        report["ours_reconstruction_rel_error"] = float(
            torch.linalg.norm(torch.einsum("noc,nc->o", ours, x) - y) / torch.linalg.norm(y))
    if args.svd_fixture:
        d = J_ours_layout.shape[1]
        jcat = J_ours_layout.permute(1, 0, 2).reshape(d, -1)  # [d, n*d]
        fixture = {
            "generator": "tools/torch_reference.py --svd-fixture",
            "reference": report["reference"],
            "model": display,
            "prompt": args.prompt,
            "token_ids": report["token_ids"],
            "concat_singular_values": torch.linalg.svdvals(jcat).tolist(),
            "per_token_singular_values": [torch.linalg.svdvals(Ji).tolist()
                                          for Ji in J_ours_layout],
        }
        with open(args.svd_fixture, "w") as fh:
            json.dump(fixture, fh)
            fh.write("\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
