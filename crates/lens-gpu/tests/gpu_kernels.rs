//! The GPU backend's kernels against the CPU backend in f64: strided,
//! transposed and batched products (summed batches, accumulation, tiles
//! that do not divide the shapes), broadcasting elementwise ops, fills,
//! products with a fused epilogue (a frozen diagonal, an addend), each in
//! every kernel variant, and typed errors for views past a buffer or
//! buffers past the binding limit. The GPU computes in f32: agreement to 1e-5 relative.

use candle_core::{DType, Device, Tensor};
use lens_engine::backend::{Backend, Batch, CpuBackend, Epilogue, MatView, Store, Strided};
use lens_gpu::{GemmTuning, Gpu, GpuError, Variant};
use lens_testkit::gpu::gpu;
use lens_testkit::{max_rel, Rng};

const TOL: f64 = 1e-5;

fn tensor(v: &[f64]) -> Tensor {
    Tensor::from_slice(v, v.len(), &Device::Cpu).expect("tensor")
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// What a case runs inside its product: a scale (`len` values, offset,
/// batch stride) and an addend (`len` values, its view, batch stride).
#[derive(Clone, Copy)]
struct Fuse {
    scale: Option<(usize, usize, usize)>,
    addend: Option<(usize, MatView, usize)>,
}

const PLAIN: Fuse = Fuse {
    scale: None,
    addend: None,
};

/// One product on both backends from the same random buffers (with a
/// fused epilogue: `gemm_fused`, the CPU's being the trait's default).
#[allow(clippy::too_many_arguments)]
fn product(
    g: &Gpu,
    rng: &mut Rng,
    lens: [usize; 3],
    dv: MatView,
    av: MatView,
    bv: MatView,
    batch: Batch,
    accumulate: bool,
    fuse: Fuse,
) -> f64 {
    let cpu = CpuBackend::<f64>::new();
    let mut random =
        |n: usize| -> Vec<f64> { (0..n).map(|_| rng.uniform() as f64 - 0.5).collect() };
    let bufs: Vec<Vec<f64>> = lens.iter().map(|&n| random(n)).collect();
    let s = fuse.scale.map(|(len, ..)| random(len));
    let c = fuse.addend.map(|(len, ..)| random(len));
    let fused = fuse.scale.is_some() || fuse.addend.is_some();
    let mut cd = bufs[0].clone();
    if fused {
        let ep = Epilogue {
            scale: fuse.scale.map(|(_, o, st)| (s.as_ref().expect("s"), o, st)),
            addend: fuse
                .addend
                .map(|(_, v, st)| (c.as_ref().expect("c"), v, st)),
        };
        let mut scratch = None;
        cpu.gemm_fused(
            &mut cd,
            dv,
            &bufs[1],
            av,
            &bufs[2],
            bv,
            batch,
            ep,
            &mut scratch,
        )
        .expect("cpu gemm");
    } else {
        cpu.gemm(&mut cd, dv, &bufs[1], av, &bufs[2], bv, batch, accumulate)
            .expect("cpu gemm");
    }
    let mut gd = g.upload(&tensor(&bufs[0])).expect("upload");
    let ga = g.upload(&tensor(&bufs[1])).expect("upload");
    let gb = g.upload(&tensor(&bufs[2])).expect("upload");
    let gs = s.map(|v| g.upload(&tensor(&v)).expect("upload"));
    let gc = c.map(|v| g.upload(&tensor(&v)).expect("upload"));
    if fused {
        let ep = Epilogue {
            scale: fuse
                .scale
                .map(|(_, o, st)| (gs.as_ref().expect("s"), o, st)),
            addend: fuse
                .addend
                .map(|(_, v, st)| (gc.as_ref().expect("c"), v, st)),
        };
        g.gemm_fused(&mut gd, dv, &ga, av, &gb, bv, batch, ep, &mut None)
            .expect("gpu gemm");
    } else {
        g.gemm(&mut gd, dv, &ga, av, &gb, bv, batch, accumulate)
            .expect("gpu gemm");
    }
    let out = values(&g.download(&gd, 0, &[lens[0]]).expect("download"));
    max_rel(&out, &cd)
}

/// Every product kernel variant in use on this adapter, in turn.
fn each_variant(g: &Gpu, mut f: impl FnMut(Variant)) {
    for v in Variant::ALL {
        g.set_tuning(GemmTuning {
            adapter: g.adapter().key(),
            wide: v,
            thin: v,
            rates: Vec::new(),
        })
        .expect("a tuning for this adapter");
        f(v);
    }
}

#[test]
fn products_match_the_cpu_backend() {
    let g = gpu();
    let mut rng = Rng::new(7);
    // Shapes that do not divide any variant's tiles or the depth of 16;
    // 5 rows: a thin product.
    let (m, k, n) = (70, 37, 130);
    type Case = (
        &'static str,
        [usize; 3],
        MatView,
        MatView,
        MatView,
        Batch,
        bool,
        Fuse,
    );
    let cases: Vec<Case> = vec![
        (
            "dense",
            [m * n, m * k, k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch::ONE,
            false,
            PLAIN,
        ),
        (
            "thin",
            [5 * n, 5 * k, k * n],
            MatView::dense(0, 5, n),
            MatView::dense(0, 5, k),
            MatView::dense(0, k, n),
            Batch::ONE,
            false,
            PLAIN,
        ),
        (
            "transposed operands, accumulate",
            [m * n, m * k, k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, k, m).t(),
            MatView::dense(0, n, k).t(),
            Batch::ONE,
            true,
            PLAIN,
        ),
        (
            "column slices with offsets",
            [5 + m * 200, 3 + m * 90, 11 + k * 150],
            MatView::dense(5, m, 200).cols(40, n),
            MatView::dense(3, m, 90).cols(20, k),
            MatView::dense(11, k, 150).cols(7, n),
            Batch::ONE,
            false,
            PLAIN,
        ),
        (
            "batched",
            [3 * m * n, 3 * m * k, k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch {
                count: 3,
                dst: m * n,
                a: m * k,
                b: 0,
            },
            false,
            PLAIN,
        ),
        (
            "batch summed into one destination",
            [m * n, 4 * m * k, 4 * k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch {
                count: 4,
                dst: 0,
                a: m * k,
                b: k * n,
            },
            true,
            PLAIN,
        ),
        (
            "column-major destination",
            [m * n, m * k, k * n],
            MatView::dense(0, n, m).t(),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch::ONE,
            false,
            PLAIN,
        ),
        (
            "fused: a frozen diagonal per product and a shared addend (I + C_p)",
            [3 * m * n, m * k, k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch {
                count: 3,
                dst: m * n,
                a: 0,
                b: 0,
            },
            false,
            Fuse {
                scale: Some((2 + 3 * k, 2, k)),
                addend: Some((m * n, MatView::dense(0, m, n), 0)),
            },
        ),
        (
            "fused: thin, transposed operand, an addend per product",
            [4 * 5 * n, 4 * 5 * k, k * n],
            MatView::dense(0, 5, n),
            MatView::dense(0, 5, k),
            MatView::dense(0, n, k).t(),
            Batch {
                count: 4,
                dst: 5 * n,
                a: 5 * k,
                b: 0,
            },
            false,
            Fuse {
                scale: Some((4 * k, 0, k)),
                addend: Some((7 + 4 * 5 * n, MatView::dense(7, 5, n), 5 * n)),
            },
        ),
        (
            "fused: summed batch with an addend",
            [m * n, 2 * m * k, 2 * k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch {
                count: 2,
                dst: 0,
                a: m * k,
                b: k * n,
            },
            false,
            Fuse {
                scale: None,
                addend: Some((m * n, MatView::dense(0, m, n), 0)),
            },
        ),
    ];
    each_variant(&g, |v| {
        for &(name, lens, dv, av, bv, batch, acc, fuse) in &cases {
            let e = product(&g, &mut rng, lens, dv, av, bv, batch, acc, fuse);
            eprintln!("{v:?} {name}: {e:.2e}");
            assert!(e <= TOL, "{v:?} {name}: relative error {e:.3e}");
        }
    });
}

#[test]
fn elementwise_and_fill_match_the_cpu_backend() {
    let g = gpu();
    let cpu = CpuBackend::<f64>::new();
    let mut rng = Rng::new(11);
    let dims = [3, 5, 70];
    let total = 3 * 5 * 70;
    let dst: Vec<f64> = (0..total + 9).map(|_| rng.uniform() as f64).collect();
    let a: Vec<f64> = (0..5 * 70 + 4).map(|_| rng.uniform() as f64).collect();
    let b: Vec<f64> = (0..3 * 70 + 2).map(|_| rng.uniform() as f64).collect();
    // a broadcast over i, b over j, read with offsets.
    let av = Strided {
        offset: 4,
        strides: [0, 70, 1],
    };
    let bv = Strided {
        offset: 2,
        strides: [70, 0, 1],
    };
    let ga = g.upload(&tensor(&a)).expect("upload");
    let gb = g.upload(&tensor(&b)).expect("upload");
    for store in [Store::Set, Store::Add, Store::Mul] {
        for with_b in [false, true] {
            let mut cd = dst.clone();
            let mut gd = g.upload(&tensor(&dst)).expect("upload");
            let bo = with_b.then_some((&b, bv));
            cpu.elementwise(store, &mut cd, 9, dims, (&a, av), bo)
                .expect("cpu");
            let gbo = with_b.then_some((&gb, bv));
            g.elementwise(store, &mut gd, 9, dims, (&ga, av), gbo)
                .expect("gpu");
            let out = values(&g.download(&gd, 0, &[total + 9]).expect("download"));
            let e = max_rel(&out, &cd);
            assert!(e <= TOL, "{store:?} with b {with_b}: {e:.3e}");
        }
    }
    for value in [0.0, -2.5] {
        let mut cd = dst.clone();
        let mut gd = g.upload(&tensor(&dst)).expect("upload");
        cpu.fill(&mut cd, 13, 700, value).expect("cpu fill");
        g.fill(&mut gd, 13, 700, value).expect("gpu fill");
        let out = values(&g.download(&gd, 0, &[total + 9]).expect("download"));
        assert!(max_rel(&out, &cd) <= TOL, "fill {value}");
    }
}

#[test]
fn bad_views_and_huge_buffers_are_typed_errors() {
    let g = gpu();
    let mut small = g.zeros(10).expect("zeros");
    let other = g.zeros(10).expect("zeros");
    let err = g
        .gemm(
            &mut small,
            MatView::dense(0, 4, 4),
            &other,
            MatView::dense(0, 4, 4),
            &other,
            MatView::dense(0, 4, 4),
            Batch::ONE,
            false,
        )
        .expect_err("a 4×4 view past a buffer of 10");
    assert!(err.to_string().contains("past buffer"), "{err}");
    let limit = g.adapter().max_binding;
    match g.zeros((limit / 4) as usize + 1) {
        Err(GpuError::TooLarge { bytes, limit: l }) => {
            assert!(bytes > l && l == limit);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a buffer past the binding limit was accepted"),
    }
    assert!(g.download(&small, 5, &[6]).is_err(), "read past the end");
}
