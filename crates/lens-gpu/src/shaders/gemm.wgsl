// dst (+)= a·b for strided views, batched over workgroup z (or summed over
// the batch inside each invocation when `sum_batch` is set).
//
// A 64×64 output tile per workgroup of 16×16 invocations, 4×4 outputs in
// registers per invocation (rows ly + 16i, columns lx + 16j), operands
// staged through workgroup memory 16 deep along k. Every operand is read
// through its strides, so a transposed operand or a head's column slice
// costs no copy.

struct Params {
    m: u32, n: u32, k: u32, count: u32,
    d_off: u32, d_rs: u32, d_cs: u32, d_bs: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs: u32,
    b_off: u32, b_rs: u32, b_cs: u32, b_bs: u32,
    accumulate: u32, sum_batch: u32, z0: u32, _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

var<workgroup> ta: array<f32, 1024>; // [kk][row]
var<workgroup> tb: array<f32, 1024>; // [kk][col]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    var z_lo = wg.z + p.z0;
    var z_hi = z_lo + 1u;
    if (p.sum_batch == 1u) {
        z_lo = 0u;
        z_hi = p.count;
    }
    for (var z = z_lo; z < z_hi; z++) {
        let ab = p.a_off + z * p.a_bs;
        let bb = p.b_off + z * p.b_bs;
        for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
            for (var i = 0u; i < 4u; i++) {
                let e = tid + i * 256u;
                let r = e % TILE;
                let kk = e / TILE;
                let gk = k0 + kk;
                let gr = row0 + r;
                var va = 0.0;
                if (gr < p.m && gk < p.k) {
                    va = a[ab + gr * p.a_rs + gk * p.a_cs];
                }
                ta[kk * TILE + r] = va;
                let gc = col0 + r;
                var vb = 0.0;
                if (gc < p.n && gk < p.k) {
                    vb = b[bb + gk * p.b_rs + gc * p.b_cs];
                }
                tb[kk * TILE + r] = vb;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < DEPTH; kk++) {
                let base = kk * TILE;
                let a0 = ta[base + lid.y];
                let a1 = ta[base + lid.y + 16u];
                let a2 = ta[base + lid.y + 32u];
                let a3 = ta[base + lid.y + 48u];
                let b0 = tb[base + lid.x];
                let b1 = tb[base + lid.x + 16u];
                let b2 = tb[base + lid.x + 32u];
                let b3 = tb[base + lid.x + 48u];
                acc[0] = fma(a0, b0, acc[0]);
                acc[1] = fma(a0, b1, acc[1]);
                acc[2] = fma(a0, b2, acc[2]);
                acc[3] = fma(a0, b3, acc[3]);
                acc[4] = fma(a1, b0, acc[4]);
                acc[5] = fma(a1, b1, acc[5]);
                acc[6] = fma(a1, b2, acc[6]);
                acc[7] = fma(a1, b3, acc[7]);
                acc[8] = fma(a2, b0, acc[8]);
                acc[9] = fma(a2, b1, acc[9]);
                acc[10] = fma(a2, b2, acc[10]);
                acc[11] = fma(a2, b3, acc[11]);
                acc[12] = fma(a3, b0, acc[12]);
                acc[13] = fma(a3, b1, acc[13]);
                acc[14] = fma(a3, b2, acc[14]);
                acc[15] = fma(a3, b3, acc[15]);
            }
            workgroupBarrier();
        }
    }
    var zd = wg.z + p.z0;
    if (p.sum_batch == 1u) {
        zd = 0u;
    }
    let db = p.d_off + zd * p.d_bs;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x + 16u * j;
            if (c >= p.n) {
                continue;
            }
            let idx = db + r * p.d_rs + c * p.d_cs;
            var v = acc[i * 4u + j];
            if (p.accumulate == 1u) {
                v += dst[idx];
            }
            dst[idx] = v;
        }
    }
}
