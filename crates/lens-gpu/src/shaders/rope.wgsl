// Rotary embedding in place, rotate-half form: for each position t, head h
// and i < hd/2, with x1 = x[i], x2 = x[i + hd/2]:
// x[i] = x1·cos[t,i] − x2·sin[t,i], x[i + hd/2] = x2·cos[t,i+hd/2] + x1·sin[t,i+hd/2].
// x is [n, heads, hd]; cos and sin are [n, hd].

struct Params {
    n: u32, heads: u32, hd: u32, total: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = gid.x + gid.y * groups.x * 256u;
    if (t >= p.total) {
        return;
    }
    let h2 = p.hd / 2u;
    let i = t % h2;
    let th = t / h2;
    let pos = th / p.heads;
    let base = th * p.hd;
    let x1 = x[base + i];
    let x2 = x[base + i + h2];
    let c = pos * p.hd;
    x[base + i] = x1 * cos_t[c + i] - x2 * sin_t[c + i];
    x[base + i + h2] = x2 * cos_t[c + i + h2] + x1 * sin_t[c + i + h2];
}
