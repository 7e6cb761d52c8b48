// dst (+)= a·b for strided views, batched over workgroup z (or summed over
// the batch inside each invocation when `sum_batch` is set).
//
// A 64×64 output tile per workgroup of 16×16 invocations, 4×4 outputs in
// registers per invocation (rows ly + 16i, columns lx + 16j), operands
// staged through workgroup memory 16 deep along k. Every operand is read
// through its strides, so a transposed operand or a head's column slice
// costs no copy. Neighbouring invocations load neighbouring addresses:
// along the tile's rows (columns) when those are contiguous in memory, and
// along k when k is (a row-major activation, a weight read transposed);
// the tiles' rows are padded to 65 so that either order of stores spreads
// over the memory banks.

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
const PAD: u32 = 65u;

var<workgroup> ta: array<f32, 1040>; // [kk][row], rows PAD apart
var<workgroup> tb: array<f32, 1040>; // [kk][col]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let tid = lid.y * 16u + lid.x;
    // Four rows of four outputs as vectors: registers everywhere (an
    // indexed array may live in memory, as lavapipe keeps it).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Which order of loads reads contiguous memory (uniform: from the strides).
    let a_along_k = p.a_cs == 1u && p.a_rs != 1u;
    let b_along_k = p.b_rs == 1u && p.b_cs != 1u;
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
                var r = e % TILE;
                var kk = e / TILE;
                if (a_along_k) {
                    r = e / DEPTH;
                    kk = e % DEPTH;
                }
                let gk = k0 + kk;
                let gr = row0 + r;
                var va = 0.0;
                if (gr < p.m && gk < p.k) {
                    va = a[ab + gr * p.a_rs + gk * p.a_cs];
                }
                ta[kk * PAD + r] = va;
                var c = e % TILE;
                var kb = e / TILE;
                if (b_along_k) {
                    c = e / DEPTH;
                    kb = e % DEPTH;
                }
                let gkb = k0 + kb;
                let gc = col0 + c;
                var vb = 0.0;
                if (gc < p.n && gkb < p.k) {
                    vb = b[bb + gkb * p.b_rs + gc * p.b_cs];
                }
                tb[kb * PAD + c] = vb;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < DEPTH; kk++) {
                let base = kk * PAD;
                let a0 = ta[base + lid.y];
                let a1 = ta[base + lid.y + 16u];
                let a2 = ta[base + lid.y + 32u];
                let a3 = ta[base + lid.y + 48u];
                let bv = vec4<f32>(
                    tb[base + lid.x],
                    tb[base + lid.x + 16u],
                    tb[base + lid.x + 32u],
                    tb[base + lid.x + 48u],
                );
                acc0 = fma(vec4<f32>(a0), bv, acc0);
                acc1 = fma(vec4<f32>(a1), bv, acc1);
                acc2 = fma(vec4<f32>(a2), bv, acc2);
                acc3 = fma(vec4<f32>(a3), bv, acc3);
            }
            workgroupBarrier();
        }
    }
    var zd = wg.z + p.z0;
    if (p.sum_batch == 1u) {
        zd = 0u;
    }
    let db = p.d_off + zd * p.d_bs;
    store(db, row0 + lid.y, col0 + lid.x, acc0);
    store(db, row0 + lid.y + 16u, col0 + lid.x, acc1);
    store(db, row0 + lid.y + 32u, col0 + lid.x, acc2);
    store(db, row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Row r's four outputs at columns c, c + 16, c + 32, c + 48.
fn store(db: u32, r: u32, c: u32, v: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    var w = v; // indexable
    for (var j = 0u; j < 4u; j++) {
        let cj = c + 16u * j;
        if (cj >= p.n) {
            continue;
        }
        let idx = db + r * p.d_rs + cj * p.d_cs;
        var x = w[j];
        if (p.accumulate == 1u) {
            x += dst[idx];
        }
        dst[idx] = x;
    }
}
