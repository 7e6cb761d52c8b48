// A stored weight matrix decoded to f32 on the GPU: GGML blocks (Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) or dense f16 / bf16 / f32, one
// invocation per output element. The layouts and the order of operations
// are ggml's (as candle's CPU dequantization has them), so both decode to
// the same values up to the GPU's fused multiply-adds.
//
// Rows are whole blocks: element (row, c) lives in block c / QK of the row
// that starts at byte row · row_bytes. Blocks are not 4-byte aligned
// (18, 22, 34, 210 bytes), so every field is read byte by byte.

struct Params {
    total: u32, cols: u32, row_bytes: u32, kind: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

const F32: u32 = 0u;
const F16: u32 = 1u;
const BF16: u32 = 2u;
const Q4_0: u32 = 3u;
const Q4_1: u32 = 4u;
const Q5_0: u32 = 5u;
const Q5_1: u32 = 6u;
const Q8_0: u32 = 7u;
const Q4_K: u32 = 8u;
const Q5_K: u32 = 9u;
const Q6_K: u32 = 10u;

fn byte(i: u32) -> u32 {
    return (q[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn u16_at(i: u32) -> u32 {
    return byte(i) | (byte(i + 1u) << 8u);
}

fn f16_at(i: u32) -> f32 {
    return unpack2x16float(u16_at(i)).x;
}

fn u32_at(i: u32) -> u32 {
    return u16_at(i) | (u16_at(i + 2u) << 16u);
}

fn i8_at(i: u32) -> f32 {
    return f32(bitcast<i32>(byte(i) << 24u) >> 24u);
}

// The 6-bit scale and min of sub-block j of a K-quant (ggml's get_scale_min_k4).
fn scale_min(j: u32, s: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte(s + j) & 63u), f32(byte(s + j + 4u) & 63u));
    }
    let sc = (byte(s + j + 4u) & 0xfu) | ((byte(s + j - 4u) >> 6u) << 4u);
    let m = (byte(s + j + 4u) >> 4u) | ((byte(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Low nibble for the first half of a 32-wide block, high for the second.
fn nibble(v: u32, high: bool) -> u32 {
    if (high) {
        return v >> 4u;
    }
    return v & 0xfu;
}

fn small_block(kind: u32, b: u32, e: u32) -> f32 {
    let j = e % 16u;
    let high = e >= 16u;
    switch kind {
        case Q4_0: {
            let d = f16_at(b);
            return (f32(nibble(byte(b + 2u + j), high)) - 8.0) * d;
        }
        case Q4_1: {
            let d = f16_at(b);
            let m = f16_at(b + 2u);
            return f32(nibble(byte(b + 4u + j), high)) * d + m;
        }
        case Q5_0: {
            let d = f16_at(b);
            let qh = u32_at(b + 2u);
            var x = 0u;
            if (high) {
                x = (byte(b + 6u + j) >> 4u) | ((qh >> (j + 12u)) & 0x10u);
            } else {
                x = (byte(b + 6u + j) & 0xfu) | (((qh >> j) << 4u) & 0x10u);
            }
            return (f32(x) - 16.0) * d;
        }
        case Q5_1: {
            let d = f16_at(b);
            let m = f16_at(b + 2u);
            let qh = u32_at(b + 4u);
            var x = 0u;
            if (high) {
                x = (byte(b + 8u + j) >> 4u) | ((qh >> (j + 12u)) & 0x10u);
            } else {
                x = (byte(b + 8u + j) & 0xfu) | (((qh >> j) << 4u) & 0x10u);
            }
            return f32(x) * d + m;
        }
        default: { // Q8_0
            return i8_at(b + 2u + e) * f16_at(b);
        }
    }
}

fn k_block(kind: u32, b: u32, e: u32) -> f32 {
    if (kind == Q6_K) {
        let d = f16_at(b + 208u);
        let part = e / 128u;
        let w = e % 128u;
        let quarter = w / 32u;
        let l = w % 32u;
        let ql = b + part * 64u;
        let qh = byte(b + 128u + part * 32u + l);
        let sc = i8_at(b + 192u + part * 8u + l / 16u + 2u * quarter);
        var lo = byte(ql + l + 32u * (quarter & 1u));
        if (quarter >= 2u) {
            lo = lo >> 4u;
        }
        let x = (lo & 0xfu) | (((qh >> (2u * quarter)) & 3u) << 4u);
        return d * sc * (f32(x) - 32.0);
    }
    // Q4_K and Q5_K: d, dmin, 12 bytes of packed 6-bit scales and mins.
    let d = f16_at(b);
    let dmin = f16_at(b + 2u);
    let chunk = e / 64u;
    let w = e % 64u;
    let l = w % 32u;
    let high = w >= 32u;
    let sm = scale_min(2u * chunk + w / 32u, b + 4u);
    var x = 0u;
    if (kind == Q4_K) {
        x = nibble(byte(b + 16u + chunk * 32u + l), high);
    } else {
        let bit = 1u << (2u * chunk + w / 32u);
        x = nibble(byte(b + 48u + chunk * 32u + l), high);
        if ((byte(b + 16u + l) & bit) != 0u) {
            x += 16u;
        }
    }
    return d * sm.x * f32(x) - dmin * sm.y;
}

fn block_bytes(kind: u32) -> u32 {
    switch kind {
        case Q4_0: { return 18u; }
        case Q4_1: { return 20u; }
        case Q5_0: { return 22u; }
        case Q5_1: { return 24u; }
        case Q8_0: { return 34u; }
        case Q4_K: { return 144u; }
        case Q5_K: { return 176u; }
        default: { return 210u; } // Q6_K
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = gid.x + gid.y * groups.x * 256u;
    if (t >= p.total) {
        return;
    }
    let row = t / p.cols;
    let c = t % p.cols;
    let r0 = row * p.row_bytes;
    var v = 0.0;
    if (p.kind == F32) {
        v = bitcast<f32>(u32_at(r0 + c * 4u));
    } else if (p.kind == F16) {
        v = f16_at(r0 + c * 2u);
    } else if (p.kind == BF16) {
        v = bitcast<f32>(u16_at(r0 + c * 2u) << 16u);
    } else if (p.kind < Q4_K) {
        v = small_block(p.kind, r0 + (c / 32u) * block_bytes(p.kind), c % 32u);
    } else {
        v = k_block(p.kind, r0 + (c / 256u) * block_bytes(p.kind), c % 256u);
    }
    dst[t] = v;
}
