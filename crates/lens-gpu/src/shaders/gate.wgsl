// The MLP's gate activation: g = gelu_tanh(x) (Gemma) or silu(x)
// (Llama, Qwen), elementwise.

struct Params {
    total: u32, gelu: u32, _a: u32, _b: u32,
}

@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = gid.x + gid.y * groups.x * 256u;
    if (t >= p.total) {
        return;
    }
    let v = x[t];
    if (p.gelu == 1u) {
        // sqrt(2/π)
        // Clamped: tanh of a large argument is ±1 in f32 anyway, and some
        // drivers compute it as a ratio of exponentials that overflows.
        let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        g[t] = 0.5 * v * (1.0 + tanh(inner));
    } else {
        g[t] = v / (1.0 + exp(-v));
    }
}
