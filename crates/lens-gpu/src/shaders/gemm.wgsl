// dst (+)= a·diag(s)·b (+ c) for strided views, batched over workgroup z
// (or summed over the batch inside each invocation when `sum_batch` is set).
// `s` (the frozen diagonal along the inner dimension) and `c` (an addend:
// the residual path, the identity of I + C) are read only when asked for,
// so the elementwise steps around a product cost no dispatch of their own.
//
// This is the common part; gemm.rs writes out the tile loop for each
// variant (tile size, outputs per invocation). Every operand is read
// through its strides, so a transposed operand or a head's column slice
// costs no copy. Neighbouring invocations load neighbouring addresses:
// along the tile's rows (columns) when those are contiguous in memory, and
// along k when k is (a row-major activation, a weight read transposed).
// An invocation's outputs are rows ly + 16i and columns lx + 16j of its
// workgroup's tile, so that neighbours store to neighbouring addresses.

struct Params {
    m: u32, n: u32, k: u32, count: u32,
    d_off: u32, d_rs: u32, d_cs: u32, d_bs: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs: u32,
    b_off: u32, b_rs: u32, b_cs: u32, b_bs: u32,
    accumulate: u32, sum_batch: u32, z0: u32, has_scale: u32,
    s_off: u32, s_bs: u32, has_addend: u32, c_off: u32,
    c_rs: u32, c_cs: u32, c_bs: u32, _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> s: array<f32>;
@group(0) @binding(5) var<storage, read> c: array<f32>;

const DEPTH: u32 = 16u;

// Row r's four outputs at columns col, col + 16, col + 32, col + 48.
fn store(db: u32, zd: u32, r: u32, col: u32, v: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    var w = v; // indexable
    for (var j = 0u; j < 4u; j++) {
        let cj = col + 16u * j;
        if (cj >= p.n) {
            continue;
        }
        let idx = db + r * p.d_rs + cj * p.d_cs;
        var x = w[j];
        if (p.has_addend == 1u) {
            x += c[p.c_off + zd * p.c_bs + r * p.c_rs + cj * p.c_cs];
        }
        if (p.accumulate == 1u) {
            x += dst[idx];
        }
        dst[idx] = x;
    }
}
