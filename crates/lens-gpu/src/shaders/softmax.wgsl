// Attention probabilities in place: scores [heads, n, n] (rows are queries)
// scaled, masked (key after the query, or for a sliding layer
// query − key ≥ window) and normalized. One invocation per row.

struct Params {
    rows: u32, n: u32, window: u32, scale: f32,
}

@group(0) @binding(0) var<storage, read_write> s: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

// window == 0: no sliding window.
fn visible(i: u32, j: u32) -> bool {
    return j <= i && (p.window == 0u || i - j < p.window);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * 256u;
    if (row >= p.rows) {
        return;
    }
    let i = row % p.n;
    let base = row * p.n;
    var m = -3.0e38;
    for (var j = 0u; j < p.n; j++) {
        if (visible(i, j)) {
            m = max(m, s[base + j] * p.scale);
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < p.n; j++) {
        var e = 0.0;
        if (visible(i, j)) {
            e = exp(s[base + j] * p.scale - m);
        }
        s[base + j] = e;
        sum += e;
    }
    for (var j = 0u; j < p.n; j++) {
        s[base + j] = s[base + j] / sum;
    }
}
