// RMSNorm with its scale recorded: for each of `rows` rows of `width`
// values, r = 1 / sqrt(mean(x²) + eps), out = x · r · w, and r goes to
// `scale[row]` (the frozen coefficient). One workgroup per row; the sum of
// squares is a tree reduction in workgroup memory.

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
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x + wg.y * p.groups_x;
    // Every invocation of the group reaches the barriers (uniform control flow).
    let live = row < p.rows;
    let base = row * p.width;
    var s = 0.0;
    if (live) {
        for (var j = lid.x; j < p.width; j += 256u) {
            let v = x[base + j];
            s = fma(v, v, s);
        }
    }
    part[lid.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) {
            part[lid.x] += part[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    let r = 1.0 / sqrt(part[0] / f32(p.width) + p.eps);
    if (lid.x == 0u) {
        scale[row] = r;
    }
    for (var j = lid.x; j < p.width; j += 256u) {
        dst[base + j] = x[base + j] * r * w[j];
    }
}
