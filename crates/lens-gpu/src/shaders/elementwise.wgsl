// dst[i, j, l] (store) a[i, j, l] (⊙ b[i, j, l]) over a dense [d0, d1, d2]
// block of dst; a and b are read through strides (0 broadcasts).

struct Params {
    d0: u32, d1: u32, d2: u32, total: u32,
    dst_off: u32, a_off: u32, b_off: u32, store: u32,
    a_s0: u32, a_s1: u32, a_s2: u32, has_b: u32,
    b_s0: u32, b_s1: u32, b_s2: u32, value: f32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// Flat index of this invocation over a 2-d grid of 256-wide workgroups
// (one dimension alone stops at 65535 workgroups).
fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = flat(gid, groups);
    if (t >= p.total) {
        return;
    }
    let l = t % p.d2;
    let ij = t / p.d2;
    let j = ij % p.d1;
    let i = ij / p.d1;
    var v = a[p.a_off + i * p.a_s0 + j * p.a_s1 + l * p.a_s2];
    if (p.has_b == 1u) {
        v *= b[p.b_off + i * p.b_s0 + j * p.b_s1 + l * p.b_s2];
    }
    let o = p.dst_off + t;
    if (p.store == 1u) {
        v += dst[o];
    } else if (p.store == 2u) {
        v *= dst[o];
    }
    dst[o] = v;
}
