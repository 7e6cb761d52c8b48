//! Top singular triplets of `J_cat` (and of the last `J_i`) without forming
//! `J` (block Lanczos on probe products) against the exact SVD of the full
//! Jacobian, on a 4-token prompt of Gemma 3 270M in f64, with the products
//! counted.

use lens_engine::analysis::lanczos::{top_triplets, KrylovOptions};
use lens_engine::analysis::svd::{decompose_concat, jacobian_values};
use lens_engine::forward::Precision;
use lens_engine::jacobian::{detached_jacobian, PassOptions};
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_testkit::real_models::{model_path, GEMMA};

/// 4 tokens: J_cat is 640 × 2560, far wider than the 8 triplets asked
/// for, and the exact SVD it is checked against stays cheap (each of the
/// Lanczos products costs ∝ n).
const PROMPT: &str = "The old lighthouse";

#[test]
fn matrix_free_top_singular_values_match_the_exact_svd() {
    let model = Model::load_path(&model_path(GEMMA)).unwrap();
    let ids = model.encode(PROMPT).unwrap();
    assert_eq!(ids.len(), 4, "a 4-token prompt");
    let tr = trace(&model, &ids, Precision::F64).unwrap();
    let (j, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
    let (values, dims) = jacobian_values(&j).unwrap();
    drop(j);
    let exact = decompose_concat(&values, dims, 8, Some(&tr.y_vec().unwrap())).unwrap();
    check_last_token(&model, &tr, &values, dims);

    let k = 8;
    let mf = top_triplets(&model, &tr, KrylovOptions::new(k), PassOptions::default()).unwrap();
    let d = model.config.hidden;
    eprintln!(
        "{}: {} products in {} blocks (the full J takes {d} transpose rows)",
        mf.method, mf.products, mf.blocks
    );
    assert_eq!(mf.triplets.len(), k);
    assert!(
        mf.products < 2 * d,
        "{} products: not cheaper than forming J",
        mf.products
    );
    let s1 = exact.singular_values[0];
    for (i, t) in mf.triplets.iter().enumerate() {
        let want = exact.singular_values[i];
        let rel = (t.sigma - want).abs() / want;
        eprintln!(
            "σ_{}: matrix-free {:.12} exact {:.12} rel {rel:.2e}, residual {:.2e}",
            i + 1,
            t.sigma,
            want,
            t.residual
        );
        assert!(rel <= 1e-6, "σ_{}: {} vs {want} ({rel:e})", i + 1, t.sigma);
        assert!(t.residual <= 1e-6 * s1, "residual {}", t.residual);
        assert!((norm(&t.u) - 1.0).abs() < 1e-9);
        assert!((norm(&t.v) - 1.0).abs() < 1e-6);
        // Same left vector as the exact SVD (both signed towards y) where the
        // singular value is well separated.
        let gap_ok = i == 0;
        if gap_ok {
            let c: f64 = t.u.iter().zip(&exact.u[i]).map(|(a, b)| a * b).sum();
            assert!(c > 1.0 - 1e-9, "u_1 agrees: {c}");
        }
    }
}

// (The same prompt's last token, alone.)
fn check_last_token(
    model: &Model,
    tr: &lens_engine::trace::Trace,
    values: &[f64],
    dims: [usize; 3],
) {
    use lens_engine::analysis::svd::decompose_token;
    let n = dims[0];
    let exact = decompose_token(values, dims, n - 1, 4, None).unwrap();
    let opts = KrylovOptions {
        position: Some(n - 1),
        ..KrylovOptions::new(4)
    };
    let mf = top_triplets(model, tr, opts, PassOptions::default()).unwrap();
    eprintln!("{}: {} products", mf.method, mf.products);
    for (i, t) in mf.triplets.iter().enumerate() {
        let want = exact.singular_values[i];
        let rel = (t.sigma - want).abs() / want;
        eprintln!(
            "J_{} σ_{}: rel {rel:.2e}, residual {:.2e}",
            n - 1,
            i + 1,
            t.residual
        );
        assert!(rel <= 1e-6, "J_last σ_{}: {} vs {want}", i + 1, t.sigma);
        assert_eq!(t.v.len(), dims[2]);
    }
    let bad = KrylovOptions {
        position: Some(n),
        ..KrylovOptions::new(4)
    };
    assert!(top_triplets(model, tr, bad, PassOptions::default()).is_err());
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}
