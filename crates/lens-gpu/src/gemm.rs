//! The matrix product's kernels: one WGSL source written out per tile shape
//! (the variants), which variant a product uses (per shape class, as tuned
//! on the adapter itself), and the tuning.
//!
//! Every variant computes the same thing: `dst (+)= a·diag(s)·b (+ c)` over
//! strided views, batched along the workgroups' z (or summed inside each
//! invocation), with the frozen diagonal `s` along the inner dimension and
//! the addend `c` optional: the elementwise steps that follow a product in
//! the passes run inside it.

use serde::{Deserialize, Serialize};

/// A tile shape of the product kernel. Every variant runs 16×16
/// invocations per workgroup, each keeping `tm × tn` outputs in registers,
/// with operands staged through workgroup memory 16 deep along the inner
/// dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// 64×64 tiles, 4×4 outputs per invocation (the first kernel).
    Tile64,
    /// 128×128 tiles, 8×8 outputs per invocation: more reuse of each
    /// staged value, for large products on GPUs with registers to spare.
    Tile128,
    /// 16×128 tiles, 1×8 outputs per invocation: for the pass's thin
    /// products (a few rows, as many positions as the prompt has), where a
    /// 64-row tile would compute mostly padding.
    Thin,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Tile64, Variant::Tile128, Variant::Thin];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Tile64 => "tile64",
            Variant::Tile128 => "tile128",
            Variant::Thin => "thin",
        }
    }

    /// Outputs per invocation: rows, columns.
    fn per_invocation(self) -> (u32, u32) {
        match self {
            Variant::Tile64 => (4, 4),
            Variant::Tile128 => (8, 8),
            Variant::Thin => (1, 8),
        }
    }

    /// The output tile of one workgroup: rows, columns.
    pub fn tile(self) -> (usize, usize) {
        let (tm, tn) = self.per_invocation();
        (16 * tm as usize, 16 * tn as usize)
    }

    /// The variants worth timing for a class.
    pub fn candidates(class: ShapeClass) -> &'static [Variant] {
        match class {
            ShapeClass::Wide => &[Variant::Tile64, Variant::Tile128],
            ShapeClass::Thin => &[Variant::Tile64, Variant::Thin],
        }
    }
}

/// Products fall in two classes, each with its own tuned variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeClass {
    /// At most [`THIN_ROWS`] output rows.
    Thin,
    Wide,
}

/// Products with at most this many output rows are thin.
pub const THIN_ROWS: usize = 32;

impl ShapeClass {
    pub fn of(rows: usize) -> Self {
        if rows <= THIN_ROWS {
            ShapeClass::Thin
        } else {
            ShapeClass::Wide
        }
    }
}

pub use lens_engine::backend::GemmShape;

/// One variant timed on one shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariantRate {
    pub variant: Variant,
    pub class: ShapeClass,
    pub shape: GemmShape,
    pub gflops: f64,
}

/// Which variant each class uses on an adapter, and the rates that chose
/// it. Kept per adapter (a file natively, browser storage in the page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmTuning {
    /// [`crate::AdapterSummary::key`] of the adapter it was timed on.
    pub adapter: String,
    pub wide: Variant,
    pub thin: Variant,
    pub rates: Vec<VariantRate>,
}

impl GemmTuning {
    /// The first kernel for every class: what runs before any tuning.
    pub fn untuned(adapter: &str) -> Self {
        Self {
            adapter: adapter.to_string(),
            wide: Variant::Tile64,
            thin: Variant::Tile64,
            rates: Vec::new(),
        }
    }

    pub fn variant(&self, class: ShapeClass) -> Variant {
        match class {
            ShapeClass::Thin => self.thin,
            ShapeClass::Wide => self.wide,
        }
    }

    /// The fastest timed variant of each class (a class not timed keeps
    /// its current choice).
    pub fn from_rates(adapter: &str, rates: Vec<VariantRate>) -> Self {
        let best = |class: ShapeClass| {
            rates
                .iter()
                .filter(|r| r.class == class && r.gflops.is_finite())
                .max_by(|a, b| a.gflops.total_cmp(&b.gflops))
                .map(|r| r.variant)
                .unwrap_or(Variant::Tile64)
        };
        Self {
            adapter: adapter.to_string(),
            wide: best(ShapeClass::Wide),
            thin: best(ShapeClass::Thin),
            rates,
        }
    }
}

/// The product kernel's WGSL for `v`: the accumulators are written out as
/// named vectors (an indexed array may live in memory, as lavapipe keeps
/// it), the loops over them unrolled here.
pub(crate) fn source(v: Variant) -> String {
    let (tm, tn) = v.per_invocation();
    let (tile_m, tile_n) = (16 * tm, 16 * tn);
    // Rows padded by one against bank conflicts, where workgroup memory
    // allows: 128-wide tiles of both operands fill WebGPU's 16 KiB.
    let pad = |t: u32| if t >= 128 { t } else { t + 1 };
    let (pad_m, pad_n) = (pad(tile_m), pad(tile_n));
    let vecs = tn / 4;
    let mut decl = String::new();
    let mut fmas = String::new();
    let mut loads_b = String::new();
    let mut stores = String::new();
    for j in 0..vecs {
        loads_b.push_str(&format!(
            "                let b{j} = vec4<f32>(tb[bb0 + {o0}u], tb[bb0 + {o1}u], tb[bb0 + {o2}u], tb[bb0 + {o3}u]);\n",
            o0 = 64 * j,
            o1 = 64 * j + 16,
            o2 = 64 * j + 32,
            o3 = 64 * j + 48
        ));
    }
    for i in 0..tm {
        fmas.push_str(&format!(
            "                let a{i} = vec4<f32>(ta[ba0 + {}u]);\n",
            16 * i
        ));
        for j in 0..vecs {
            decl.push_str(&format!("    var acc{i}_{j} = vec4<f32>(0.0);\n"));
            fmas.push_str(&format!(
                "                acc{i}_{j} = fma(a{i}, b{j}, acc{i}_{j});\n"
            ));
            stores.push_str(&format!(
                "    store(db, zd, row0 + lid.y + {}u, col0 + lid.x + {}u, acc{i}_{j});\n",
                16 * i,
                64 * j
            ));
        }
    }
    format!(
        "{header}
const TM: u32 = {tm}u;
const TN: u32 = {tn}u;
const TILE_M: u32 = {tile_m}u;
const TILE_N: u32 = {tile_n}u;
const PAD_M: u32 = {pad_m}u;
const PAD_N: u32 = {pad_n}u;

var<workgroup> ta: array<f32, {ta_len}>; // [kk][row], rows PAD_M apart
var<workgroup> tb: array<f32, {tb_len}>; // [kk][col], rows PAD_N apart

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {{
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    let tid = lid.y * 16u + lid.x;
{decl}    // Which order of loads reads contiguous memory (uniform: from the strides).
    let a_along_k = p.a_cs == 1u && p.a_rs != 1u;
    let b_along_k = p.b_rs == 1u && p.b_cs != 1u;
    var z_lo = wg.z + p.z0;
    var z_hi = z_lo + 1u;
    if (p.sum_batch == 1u) {{
        z_lo = 0u;
        z_hi = p.count;
    }}
    for (var z = z_lo; z < z_hi; z++) {{
        let ab = p.a_off + z * p.a_bs;
        let bb = p.b_off + z * p.b_bs;
        let sb = p.s_off + z * p.s_bs;
        for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {{
            for (var i = 0u; i < TM; i++) {{
                let e = tid + i * 256u;
                var r = e % TILE_M;
                var kk = e / TILE_M;
                if (a_along_k) {{
                    r = e / DEPTH;
                    kk = e % DEPTH;
                }}
                let gk = k0 + kk;
                let gr = row0 + r;
                var va = 0.0;
                if (gr < p.m && gk < p.k) {{
                    va = a[ab + gr * p.a_rs + gk * p.a_cs];
                    if (p.has_scale == 1u) {{
                        va *= s[sb + gk];
                    }}
                }}
                ta[kk * PAD_M + r] = va;
            }}
            for (var i = 0u; i < TN; i++) {{
                let e = tid + i * 256u;
                var cc = e % TILE_N;
                var kb = e / TILE_N;
                if (b_along_k) {{
                    cc = e / DEPTH;
                    kb = e % DEPTH;
                }}
                let gkb = k0 + kb;
                let gc = col0 + cc;
                var vb = 0.0;
                if (gc < p.n && gkb < p.k) {{
                    vb = b[bb + gkb * p.b_rs + gc * p.b_cs];
                }}
                tb[kb * PAD_N + cc] = vb;
            }}
            workgroupBarrier();
            for (var kk = 0u; kk < DEPTH; kk++) {{
                let ba0 = kk * PAD_M + lid.y;
                let bb0 = kk * PAD_N + lid.x;
{loads_b}{fmas}            }}
            workgroupBarrier();
        }}
    }}
    var zd = wg.z + p.z0;
    if (p.sum_batch == 1u) {{
        zd = 0u;
    }}
    let db = p.d_off + zd * p.d_bs;
{stores}}}
",
        header = include_str!("shaders/gemm.wgsl"),
        ta_len = 16 * pad_m,
        tb_len = 16 * pad_n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_fits_webgpus_default_workgroup_memory() {
        for v in Variant::ALL {
            let (tm, tn) = v.tile();
            let src = source(v);
            // 16 KiB of workgroup memory, WebGPU's default limit.
            let floats: usize = src
                .lines()
                .filter(|l| l.starts_with("var<workgroup>"))
                .map(|l| {
                    let n = l.split(", ").nth(1).expect("array length");
                    n.trim_end_matches(|c: char| !c.is_ascii_digit())
                        .parse::<usize>()
                        .expect("length")
                })
                .sum();
            assert!(floats * 4 <= 16384, "{v:?}: {} bytes", floats * 4);
            assert!(floats >= 16 * (tm + tn), "{v:?}");
        }
    }

    #[test]
    fn the_fastest_variant_of_each_class_is_chosen() {
        let shape = GemmShape {
            rows: 64,
            cols: 64,
            inner: 64,
            count: 1,
        };
        let rate = |variant, class, gflops| VariantRate {
            variant,
            class,
            shape,
            gflops,
        };
        let t = GemmTuning::from_rates(
            "a",
            vec![
                rate(Variant::Tile64, ShapeClass::Wide, 10.0),
                rate(Variant::Tile128, ShapeClass::Wide, 30.0),
                rate(Variant::Tile64, ShapeClass::Thin, 5.0),
                rate(Variant::Thin, ShapeClass::Thin, 2.0),
            ],
        );
        assert_eq!(t.variant(ShapeClass::Wide), Variant::Tile128);
        assert_eq!(t.variant(ShapeClass::Thin), Variant::Tile64);
        assert_eq!(ShapeClass::of(THIN_ROWS), ShapeClass::Thin);
        assert_eq!(ShapeClass::of(THIN_ROWS + 1), ShapeClass::Wide);
    }
}
