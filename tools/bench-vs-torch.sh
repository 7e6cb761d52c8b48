#!/usr/bin/env bash
# Our detached Jacobian against the paper's way of computing it (transformers +
# torch autograd, float64, tools/torch_reference.py), same model, prompt and
# thread count. A benchmark, not a CI test.
#
#   bash tools/bench-vs-torch.sh [MODEL] [PROMPT] [THREADS]
#     MODEL    gemma-3-270m (default), smollm2-135m, or a .gguf path
#     PROMPT   default "The bridge out of Marin is the"
#     THREADS  default 2
#
# Prints our `linear-lens bench` JSON, the torch reference JSON, and a summary:
#   speedup = torch jacobian_s / (ours jacobian_ms / 1000), and the relative
#   Frobenius difference of the two Jacobians.
# Env: PYTHON (default python3), CARGO_TARGET_DIR, LINEAR_LENS_MODELS,
#      NO_BUILD=1 to use the existing release binary as it is.
# Needs: cargo, python3 with torch, transformers, gguf, numpy.
set -euo pipefail
cd "$(dirname "$0")/.."

model=${1:-gemma-3-270m}
prompt=${2:-The bridge out of Marin is the}
threads=${3:-2}
python=${PYTHON:-python3}
bin="${CARGO_TARGET_DIR:-target}/release/linear-lens"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    cargo build --release -q -p lens-cli >&2
fi
[[ -x "$bin" ]] || { echo "bench-vs-torch: no $bin (cargo build --release -p lens-cli)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ours_npy="$work/ours.npy"

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
"$bin" bench --model "$model" --prompt "$prompt" --precision f64 \
    --threads "$threads" --save-jacobian "$ours_npy" >"$work/ours.json"
[[ -s "$ours_npy" ]] || { echo "bench-vs-torch: linear-lens bench wrote no $ours_npy" >&2; exit 1; }
"$python" tools/torch_reference.py --model "$model" --prompt "$prompt" \
    --threads "$threads" --compare "$ours_npy" >"$work/torch.json"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo "ours:  $(cat "$work/ours.json")"
echo "torch: $(cat "$work/torch.json")"
"$python" - "$work/ours.json" "$work/torch.json" <<'EOF'
import json, sys
ours, ref = (json.load(open(p)) for p in sys.argv[1:3])
if ours["n_tokens"] != ref["n_tokens"]:
    sys.exit(f"bench-vs-torch: token counts differ (ours {ours['n_tokens']}, torch {ref['n_tokens']})")
ours_s = ours["jacobian_ms"] / 1000.0
print(f"{ref['model']}, {ref['n_tokens']} tokens, {ref['threads']} threads: "
      f"torch {ref['jacobian_s']:.3f} s, ours {ours_s:.3f} s, "
      f"speedup = {ref['jacobian_s'] / ours_s:.1f}x; "
      f"rel diff ||J_torch - J_ours||/||J_torch|| = {ref['rel_diff_vs_ours']:.3e}; "
      f"reconstruction torch {ref['reconstruction_rel_error']:.1e}, "
      f"ours (in torch) {ref['ours_reconstruction_rel_error']:.1e}; "
      f"peak RSS torch {ref['peak_rss_mib']:.0f} MiB, ours {ours.get('peak_rss_mib', float('nan')):.0f} MiB")
EOF
