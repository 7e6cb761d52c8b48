//! What a full J asks of the GPU, counted (`Gpu::work`): after the pass's
//! first block no buffer is created, and after the first block that covers
//! every position no bind group but those of each block's own weights
//! (made once per model); a second J creates nothing at all; a block is
//! one submit, one compute pass and a fixed, small number of dispatches. And the product kernel's tuning: every candidate timed on
//! the pass's own products, the fastest kept, a tuning refused on another
//! adapter, and the J it gives still equal to f64's to 1e-4.

use lens_engine::forward::Precision;
use lens_engine::jacobian::{
    detached_jacobian, detached_jacobian_on, jacobian_products, rel_error, PassOptions,
};
use lens_engine::trace::trace;
use lens_engine::{progress, Model};
use lens_gpu::{block_on, GemmTuning, GpuWork, ShapeClass, Variant};
use lens_testkit::gpu::gpu;
use lens_testkit::{prompt, tiny_hf_dir, Family, Spec};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

/// Four blocks: the first (one position), the first at full width, and
/// two that repeat it.
fn tiny(family: Family) -> Model {
    let spec = Spec {
        layers: 4,
        ..Spec::new(family)
    };
    let dir = tiny_hf_dir(&format!("gpu-work-{family:?}"), &spec, json!({}));
    Model::load_path(&dir).expect("tiny model loads")
}

#[test]
fn a_full_j_creates_nothing_once_its_blocks_repeat() {
    let g = Rc::new(gpu());
    let m = tiny(Family::Gemma3);
    let ids = m
        .encode(&prompt(3, 6, Spec::new(Family::Gemma3).vocab))
        .expect("encode");
    let tr = block_on(lens_gpu::trace::trace(&g, &m, &ids)).expect("GPU trace");
    // The counters at each block's start, and once all blocks ran.
    let seen: Rc<RefCell<Vec<(usize, GpuWork)>>> = Rc::default();
    let hook = {
        let (g, seen) = (g.clone(), seen.clone());
        Rc::new(move |done: usize, _total: usize| seen.borrow_mut().push((done, g.work())))
    };
    let before = g.work();
    let (j, _) = {
        let _hook = progress::install(hook);
        block_on(detached_jacobian_on(&*g, &m, &tr, PassOptions::default())).expect("GPU J")
    };
    let whole = g.work().since(&before);
    let seen = seen.borrow();
    let layers = m.config.layers;
    assert_eq!(
        seen.len(),
        layers + 1,
        "a report per block and one at the end"
    );
    let at = |done: usize| seen.iter().find(|(d, _)| *d == done).expect("report").1;
    for b in 0..layers {
        let w = at(b + 1).since(&at(b));
        eprintln!(
            "block {b}: {} dispatches, {} submits, {} passes, {} buffers, {} bind groups",
            w.dispatches, w.submits, w.compute_passes, w.buffers_created, w.bind_groups_created
        );
        if b >= 1 {
            assert_eq!(w.buffers_created, 0, "block {b} created buffers");
        }
        // Each block's weights are its own: their decoding's bind groups
        // (at most one per matrix) are made once per model.
        if b >= 2 {
            assert!(w.bind_groups_created <= 4, "block {b}: {w:?}");
        }
    }
    // A block at full width: its weights decoded (4) and norm weights
    // folded (2 or 4), attention 3 products, the MLP's maps 2 per group.
    let steady = at(3).since(&at(2));
    assert!(
        steady.dispatches <= 16,
        "{} dispatches in a block",
        steady.dispatches
    );
    assert_eq!(
        (steady.submits, steady.compute_passes),
        (1, 1),
        "{steady:?}"
    );
    eprintln!("whole J: {whole:?}");
    assert!(whole.bytes_read_back as usize >= j.elem_count() * 4);
    // The same J again (a reload, the same prompt on another view): not one
    // buffer is made, and the bind groups are found in the cache (the
    // pool may hand the same buffers out in other roles once or twice).
    let mut again = None;
    let mut made = Vec::new();
    for _ in 0..3 {
        let before = g.work();
        let (j2, _) =
            block_on(detached_jacobian_on(&*g, &m, &tr, PassOptions::default())).expect("GPU J");
        let w = g.work().since(&before);
        eprintln!("J again: {w:?}");
        assert_eq!(w.buffers_created, 0, "{w:?}");
        made.push(w.bind_groups_created);
        again = Some(j2);
    }
    assert_eq!(
        made.last(),
        Some(&0),
        "bind groups made by each J: {made:?}"
    );
    let again = again.expect("a J");
    assert_eq!(rel_error(&again, &j).expect("rel"), 0.0);
    // Still the exact J of the frozen network.
    let tr64 = trace(&m, &ids, Precision::F64).expect("trace f64");
    let (j64, _) = detached_jacobian(&m, &tr64, PassOptions::default()).expect("CPU J");
    let vs = rel_error(&j, &j64).expect("rel");
    assert!(vs <= 1e-4, "GPU J vs f64 {vs:.3e}");
}

#[test]
fn the_tuning_times_each_candidate_and_keeps_the_fastest() {
    let g = gpu();
    let m = tiny(Family::Qwen3);
    let n = 7;
    let shapes = jacobian_products(&m, n);
    assert!(shapes
        .iter()
        .any(|s| ShapeClass::of(s.rows) == ShapeClass::Thin));
    let t = block_on(g.tune(&shapes)).expect("tune");
    for class in [ShapeClass::Wide, ShapeClass::Thin] {
        let rates: Vec<_> = t.rates.iter().filter(|r| r.class == class).collect();
        let timed: Vec<Variant> = rates.iter().map(|r| r.variant).collect();
        assert_eq!(timed, Variant::candidates(class), "{class:?}");
        let best = rates
            .iter()
            .max_by(|a, b| a.gflops.total_cmp(&b.gflops))
            .expect("a rate");
        assert!(best.gflops > 0.0 && best.gflops.is_finite());
        assert_eq!(t.variant(class), best.variant, "{class:?}");
        eprintln!("{class:?}: {rates:?}");
    }
    assert_eq!(g.tuning(), t, "the tuning is in use");
    // Remembered as JSON, it comes back the same; for another adapter it
    // is refused.
    let back: GemmTuning =
        serde_json::from_str(&serde_json::to_string(&t).expect("json")).expect("parse");
    assert_eq!(back, t);
    let other = GemmTuning {
        adapter: "another GPU | Vulkan | 1.0".into(),
        ..t.clone()
    };
    let err = g.set_tuning(other).expect_err("another adapter's tuning");
    assert!(err.to_string().contains("does not apply"), "{err}");
    // The J with the tuned kernels is the exact one.
    let ids = m
        .encode(&prompt(5, n, Spec::new(Family::Qwen3).vocab))
        .expect("encode");
    let tr = block_on(lens_gpu::trace::trace(&g, &m, &ids)).expect("GPU trace");
    let (j, _) =
        block_on(detached_jacobian_on(&g, &m, &tr, PassOptions::default())).expect("GPU J");
    let tr64 = trace(&m, &ids, Precision::F64).expect("trace f64");
    let (j64, _) = detached_jacobian(&m, &tr64, PassOptions::default()).expect("CPU J");
    let vs = rel_error(&j, &j64).expect("rel");
    assert!(vs <= 1e-4, "GPU J vs f64 {vs:.3e}");
}
