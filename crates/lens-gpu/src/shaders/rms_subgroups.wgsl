// RMSNorm with its scale recorded, as rms.wgsl, with the sum of squares
// reduced by subgroup operations where the adapter has them: one
// subgroupAdd per subgroup, each subgroup's total in workgroup memory, one
// barrier, then every subgroup sums the totals itself (256/size reads and
// a second subgroupAdd) instead of a tree of eight barriers.
//
// Subgroup membership is not assumed to follow the invocation index: each
// subgroup's lane 0 writes its total at its own index, every other slot is
// zero, and a subgroup's lanes 0..size-1 read all 256 slots between them.
// That needs full subgroups: 256 is a multiple of every subgroup size.
// Loops are subgroup-uniform (the subgroup operations need it).

struct Params {
    rows: u32, width: u32, eps: f32, groups_x: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) size: u32,
) {
    let row = wg.x + wg.y * p.groups_x;
    let live = row < p.rows;
    let base = row * p.width;
    var s = 0.0;
    for (var j0 = 0u; j0 < p.width; j0 += 256u) {
        let j = j0 + lid.x;
        if (live && j < p.width) {
            let v = x[base + j];
            s = fma(v, v, s);
        }
    }
    let t = subgroupAdd(s);
    part[lid.x] = select(0.0, t, sid == 0u);
    workgroupBarrier();
    var u = 0.0;
    for (var j0 = 0u; j0 < 256u; j0 += size) {
        u += part[j0 + sid];
    }
    let total = subgroupAdd(u);
    if (!live) {
        return;
    }
    let r = 1.0 / sqrt(total / f32(p.width) + p.eps);
    if (lid.x == 0u) {
        scale[row] = r;
    }
    for (var j = lid.x; j < p.width; j += 256u) {
        dst[base + j] = x[base + j] * r * w[j];
    }
}
