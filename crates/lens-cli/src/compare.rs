//! `linear-lens compare`'s summary on the terminal.

use lens_engine::analysis::compare::Comparison;
use lens_engine::analysis::Report;

pub fn print(a: &Report, b: &Report, c: &Comparison) {
    let t = &c.target;
    println!("A: {} {:?}", a.model, a.tokens.concat());
    println!("B: {} {:?}", b.model, b.tokens.concat());
    let top = |r: &Report| {
        r.top
            .first()
            .map(|t| format!("{:?} ({:.3})", t.token, t.prob))
    };
    println!(
        "prediction: A {}  B {}{}",
        top(a).unwrap_or_default(),
        top(b).unwrap_or_default(),
        if c.prediction.flipped {
            "  (flipped)"
        } else {
            ""
        }
    );
    let num = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "  A's probability of B's top {}, B's of A's top {}",
        num(c.prediction.prob_a_of_top_b),
        num(c.prediction.prob_b_of_top_a)
    );
    println!(
        "logit of {:?}: A {:.4}  B {:.4}  change {:+.4} (the shares' change sums to it within {:.1e})",
        t.token, t.logit_a, t.logit_b, c.logit_change, c.sum_rel_error
    );
    println!(
        "aligned by {:?}; per token: share in A, share in B, change",
        c.aligned_by
    );
    let tok =
        |r: &Report, i: Option<usize>| i.map_or(String::new(), |i| format!("{:?}", r.tokens[i]));
    // The share rows follow the alignment row for row.
    for (al, row) in c.alignment.iter().zip(&c.shares) {
        println!(
            "  {:<10} {:>10} {:>10} {:>+10.4}  {} → {}",
            format!("{:?}", al.op).to_lowercase(),
            num(row.share_a),
            num(row.share_b),
            row.change,
            tok(a, row.a),
            tok(b, row.b)
        );
    }
    let s = &c.spectra;
    let head = |v: &[f64]| {
        v.iter()
            .take(6)
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("σ of J_cat: A {}  B {}", head(&s.sigma_a), head(&s.sigma_b));
    if let (Some(ra), Some(rb)) = (s.stable_rank_a, s.stable_rank_b) {
        println!("stable rank: A {ra:.3}  B {rb:.3}");
    }
    if let Some(angles) = &c.principal_angles {
        println!(
            "principal angles between the top left singular subspaces (degrees): {}",
            angles
                .iter()
                .map(|x| format!("{:.1}", x.to_degrees()))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !c.shared_words.is_empty() {
        println!("words both decode to: {:?}", c.shared_words);
    }
    for (side, points) in [("A", &c.layers.a), ("B", &c.layers.b)] {
        for l in points.iter().filter(|l| l.mode == "cumulative") {
            println!(
                "  {side} layer {:>3} (depth {:.2}) {:<5} stable rank {:.3}",
                l.layer,
                l.depth,
                l.kind.name(),
                l.stable_rank
            );
        }
    }
}
