// out[dst_off .. dst_off + total] = value

struct Params {
    total: u32, dst_off: u32, value: f32, _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> q: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = gid.x + gid.y * groups.x * 256u;
    if (t >= q.total) {
        return;
    }
    out[q.dst_off + t] = q.value;
}
