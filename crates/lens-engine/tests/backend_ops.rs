//! The CPU backend's operations against plain loops: strided, transposed and
//! batched products with and without accumulation (summed batches, batches
//! run side by side), broadcasting elementwise ops, and typed errors for
//! views that leave their buffer.

use lens_engine::backend::{Backend, Batch, CpuBackend, MatView, Store, Strided};
use lens_testkit::Rng;

fn random(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.uniform() as f64).collect()
}

fn at(buf: &[f64], v: &MatView, extra: usize, r: usize, c: usize) -> f64 {
    buf[v.offset + extra + r * v.rs + c * v.cs]
}

/// `dst (+)= a·b` for every batch item by plain loops.
#[allow(clippy::too_many_arguments)]
fn reference(
    dst: &mut [f64],
    dv: MatView,
    a: &[f64],
    av: MatView,
    b: &[f64],
    bv: MatView,
    batch: Batch,
    accumulate: bool,
) {
    for i in 0..batch.count {
        for r in 0..dv.rows {
            for c in 0..dv.cols {
                let mut s = 0.0;
                for q in 0..av.cols {
                    s += at(a, &av, i * batch.a, r, q) * at(b, &bv, i * batch.b, q, c);
                }
                let o = dv.offset + i * batch.dst + r * dv.rs + c * dv.cs;
                dst[o] = if accumulate || (i > 0 && batch.dst == 0) {
                    dst[o] + s
                } else {
                    s
                };
            }
        }
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[allow(clippy::too_many_arguments)]
fn check(
    rng: &mut Rng,
    dv: MatView,
    av: MatView,
    bv: MatView,
    batch: Batch,
    accumulate: bool,
    lens: (usize, usize, usize),
) {
    let be = CpuBackend::<f64>::new();
    let a = random(rng, lens.1);
    let b = random(rng, lens.2);
    let start = random(rng, lens.0);
    let mut got = start.clone();
    be.gemm(&mut got, dv, &a, av, &b, bv, batch, accumulate)
        .expect("gemm");
    let mut want = start;
    reference(&mut want, dv, &a, av, &b, bv, batch, accumulate);
    let err = max_diff(&got, &want);
    assert!(
        err <= 1e-12,
        "{dv:?} = {av:?}·{bv:?} {batch:?} acc={accumulate}: {err:e}"
    );
}

#[test]
fn dense_transposed_and_sliced_products_match_loops() {
    let mut rng = Rng::new(11);
    // Plain, then with the right operand read transposed, as the forward does.
    for acc in [false, true] {
        check(
            &mut rng,
            MatView::dense(0, 7, 5),
            MatView::dense(0, 7, 9),
            MatView::dense(0, 9, 5),
            Batch::ONE,
            acc,
            (35, 63, 45),
        );
        check(
            &mut rng,
            MatView::dense(3, 7, 5),
            MatView::dense(2, 7, 9),
            MatView::dense(1, 5, 9).t(),
            Batch::ONE,
            acc,
            (38, 65, 46),
        );
    }
    // A column slice of a wider matrix (one head of W̃o) into a strided destination.
    let wide = MatView::dense(0, 6, 12).cols(4, 4);
    let dst = MatView {
        offset: 1,
        rows: 5,
        cols: 4,
        rs: 9,
        cs: 2,
    };
    check(
        &mut rng,
        dst,
        MatView::dense(0, 5, 6),
        wide,
        Batch::ONE,
        true,
        (46, 30, 72),
    );
    // Tall products are split into row blocks internally.
    check(
        &mut rng,
        MatView::dense(0, 3000, 3),
        MatView::dense(0, 3000, 4),
        MatView::dense(0, 4, 3),
        Batch::ONE,
        false,
        (9000, 12000, 12),
    );
}

#[test]
fn batches_are_independent_or_summed() {
    let mut rng = Rng::new(12);
    // Independent destinations, large enough to run side by side.
    // (2·300·300·290 flops each: above the side-by-side threshold.)
    let batch = Batch {
        count: 3,
        dst: 300 * 300,
        a: 300 * 290,
        b: 0,
    };
    check(
        &mut rng,
        MatView::dense(0, 300, 300),
        MatView::dense(0, 300, 290),
        MatView::dense(0, 290, 300),
        batch,
        true,
        (3 * 90000, 3 * 87000, 87000),
    );
    // One destination: the products are summed (the first one sets it).
    let batch = Batch {
        count: 4,
        dst: 0,
        a: 6 * 6,
        b: 6 * 10,
    };
    for acc in [false, true] {
        check(
            &mut rng,
            MatView::dense(0, 6, 10),
            MatView::dense(0, 6, 6).t(),
            MatView::dense(0, 6, 10),
            batch,
            acc,
            (60, 144, 240),
        );
    }
}

#[test]
fn elementwise_broadcasts_and_stores() {
    let be = CpuBackend::<f64>::new();
    let mut rng = Rng::new(13);
    let dims = [3, 4, 5];
    let a = random(&mut rng, 60);
    let g = random(&mut rng, 20); // [4, 5], broadcast over the first axis
    let gv = Strided {
        offset: 0,
        strides: [0, 5, 1],
    };
    let start = random(&mut rng, 70);
    for store in [Store::Set, Store::Add, Store::Mul] {
        let mut got = start.clone();
        be.elementwise(
            store,
            &mut got,
            10,
            dims,
            (&a, Strided::dense(0, dims)),
            Some((&g, gv)),
        )
        .expect("elementwise");
        let mut want = start.clone();
        for i in 0..3 {
            for j in 0..4 {
                for l in 0..5 {
                    let v = a[i * 20 + j * 5 + l] * g[j * 5 + l];
                    let o = &mut want[10 + i * 20 + j * 5 + l];
                    match store {
                        Store::Set => *o = v,
                        Store::Add => *o += v,
                        Store::Mul => *o *= v,
                    }
                }
            }
        }
        assert_eq!(got, want, "{store:?}");
    }
    // A large block goes through the threaded path; a row-broadcast scale.
    let dims = [2, 300, 400];
    let big = random(&mut rng, 2 * 300 * 400);
    let rows = random(&mut rng, 300);
    let mut got = big.clone();
    let rv = Strided {
        offset: 0,
        strides: [0, 1, 0],
    };
    be.elementwise(Store::Mul, &mut got, 0, dims, (&rows, rv), None)
        .expect("scale");
    for (idx, v) in got.iter().enumerate() {
        let j = (idx / 400) % 300;
        assert_eq!(*v, big[idx] * rows[j]);
    }
}

#[test]
fn views_outside_their_buffer_are_errors() {
    let be = CpuBackend::<f64>::new();
    let a = vec![1.0; 12];
    let b = vec![1.0; 12];
    let mut dst = vec![0.0; 9];
    // 3×4 · 4×3 fits; one more batch item reads past `a`.
    let (dv, av, bv) = (
        MatView::dense(0, 3, 3),
        MatView::dense(0, 3, 4),
        MatView::dense(0, 4, 3),
    );
    be.gemm(&mut dst, dv, &a, av, &b, bv, Batch::ONE, false)
        .expect("fits");
    assert_eq!(dst, vec![4.0; 9]);
    let two = Batch {
        count: 2,
        dst: 0,
        a: 12,
        b: 0,
    };
    let err = be
        .gemm(&mut dst, dv, &a, av, &b, bv, two, false)
        .expect_err("past the end");
    assert!(err.to_string().contains("past buffer"), "{err}");
    // Mismatched inner dimensions.
    let err = be
        .gemm(
            &mut dst,
            dv,
            &a,
            av,
            &b,
            MatView::dense(0, 3, 3),
            Batch::ONE,
            false,
        )
        .expect_err("shapes");
    assert!(err.to_string().contains("gemm shapes"), "{err}");
    // A destination whose rows overlap.
    let overlapping = MatView {
        offset: 0,
        rows: 3,
        cols: 3,
        rs: 1,
        cs: 1,
    };
    assert!(be
        .gemm(&mut dst, overlapping, &a, av, &b, bv, Batch::ONE, false)
        .is_err());
    assert!(be
        .elementwise(
            Store::Set,
            &mut dst,
            5,
            [1, 1, 5],
            (&a, Strided::dense(0, [1, 1, 5])),
            None
        )
        .is_err());
    assert!(be.fill(&mut dst, 8, 2, 0.0).is_err());
}
