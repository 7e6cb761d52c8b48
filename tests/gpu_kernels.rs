//! The GPU backend's kernels against the CPU backend in f64: strided,
//! transposed and batched products (summed batches, accumulation, tiles
//! that do not divide the shapes), broadcasting elementwise ops, fills,
//! and typed errors for views past a buffer or buffers past the binding
//! limit. The GPU computes in f32: agreement to 1e-5 relative.

mod common;

use candle_core::{DType, Device, Tensor};
use common::gpu::gpu;
use common::{rel_err, Rng};
use lens_engine::backend::{Backend, Batch, CpuBackend, MatView, Store, Strided};
use lens_gpu::{Gpu, GpuError};

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

/// One product on both backends from the same random buffers.
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
) -> f64 {
    let cpu = CpuBackend::<f64>::new();
    let bufs: Vec<Vec<f64>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| rng.uniform() as f64 - 0.5).collect())
        .collect();
    let mut cd = bufs[0].clone();
    cpu.gemm(&mut cd, dv, &bufs[1], av, &bufs[2], bv, batch, accumulate)
        .expect("cpu gemm");
    let mut gd = g.upload(&tensor(&bufs[0])).expect("upload");
    let ga = g.upload(&tensor(&bufs[1])).expect("upload");
    let gb = g.upload(&tensor(&bufs[2])).expect("upload");
    g.gemm(&mut gd, dv, &ga, av, &gb, bv, batch, accumulate)
        .expect("gpu gemm");
    let out = values(&g.download(&gd, 0, &[lens[0]]).expect("download"));
    rel_err(&out, &cd)
}

#[test]
fn products_match_the_cpu_backend() {
    let g = gpu();
    let mut rng = Rng::new(7);
    // Shapes that do not divide the 64×64 tiles or the depth of 16.
    let (m, k, n) = (70, 37, 130);
    type Case = (
        &'static str,
        [usize; 3],
        MatView,
        MatView,
        MatView,
        Batch,
        bool,
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
        ),
        (
            "transposed operands, accumulate",
            [m * n, m * k, k * n],
            MatView::dense(0, m, n),
            MatView::dense(0, k, m).t(),
            MatView::dense(0, n, k).t(),
            Batch::ONE,
            true,
        ),
        (
            "column slices with offsets",
            [5 + m * 200, 3 + m * 90, 11 + k * 150],
            MatView::dense(5, m, 200).cols(40, n),
            MatView::dense(3, m, 90).cols(20, k),
            MatView::dense(11, k, 150).cols(7, n),
            Batch::ONE,
            false,
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
        ),
        (
            "column-major destination",
            [m * n, m * k, k * n],
            MatView::dense(0, n, m).t(),
            MatView::dense(0, m, k),
            MatView::dense(0, k, n),
            Batch::ONE,
            false,
        ),
    ];
    for (name, lens, dv, av, bv, batch, acc) in cases {
        let e = product(&g, &mut rng, lens, dv, av, bv, batch, acc);
        eprintln!("{name}: {e:.2e}");
        assert!(e <= TOL, "{name}: relative error {e:.3e}");
    }
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
            let e = rel_err(&out, &cd);
            assert!(e <= TOL, "{store:?} with b {with_b}: {e:.3e}");
        }
    }
    for value in [0.0, -2.5] {
        let mut cd = dst.clone();
        let mut gd = g.upload(&tensor(&dst)).expect("upload");
        cpu.fill(&mut cd, 13, 700, value).expect("cpu fill");
        g.fill(&mut gd, 13, 700, value).expect("gpu fill");
        let out = values(&g.download(&gd, 0, &[total + 9]).expect("download"));
        assert!(rel_err(&out, &cd) <= TOL, "fill {value}");
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
