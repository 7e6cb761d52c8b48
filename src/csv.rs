//! The numbers of a view as CSV (the export's "Numbers of this view"):
//! plain text from the Report, built and tested natively.

use crate::view_data::CompareData;
use lens_protocol::report::{Columns, Heatmap, Report};
use lens_protocol::View;

/// One CSV field, quoted when it needs to be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with([' ', '=', '+', '-', '@']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn row(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

fn num(x: f64) -> String {
    format!("{x:e}")
}

fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

/// The compare view's numbers: each aligned row's tokens, operation, the
/// target's share in A and in B, and the change.
pub fn comparison(d: &CompareData) -> String {
    let mut out = row(&[
        "a_token".into(),
        "b_token".into(),
        "op".into(),
        "share_a".into(),
        "share_b".into(),
        "change".into(),
    ]);
    for r in &d.rows {
        out.push_str(&row(&[
            r.a.clone().unwrap_or_default(),
            r.b.clone().unwrap_or_default(),
            format!("{:?}", r.op).to_lowercase(),
            opt(r.share_a),
            opt(r.share_b),
            num(r.change),
        ]));
    }
    out
}

/// The CSV of `view`'s numbers; `None` when the view has none yet.
pub fn csv(view: View, report: &Report, inspect: Option<&(Heatmap, Columns)>) -> Option<String> {
    let mut out = String::new();
    let mut put = |f: Vec<String>| out.push_str(&row(&f));
    let s = |x: &str| x.to_string();
    match view {
        View::Prediction => {
            put(vec![s("rank"), s("id"), s("token"), s("logit"), s("prob")]);
            for (k, t) in report.top.iter().enumerate() {
                put(vec![
                    (k + 1).to_string(),
                    t.id.to_string(),
                    t.token.clone(),
                    num(t.logit),
                    num(t.prob),
                ]);
            }
        }
        View::Exactness => {
            put(vec![s("reconstruction"), s("rel_error")]);
            let r = &report.reconstruction;
            put(vec![s("detached"), opt(r.detached_rel_error)]);
            put(vec![s("ordinary"), opt(r.ordinary_rel_error)]);
            put(vec![s("contributions"), num(r.contributions_rel_error)]);
        }
        View::Tokens => {
            put(vec![
                s("position"),
                s("token"),
                s("attribution"),
                s("embedding_norm"),
                s("contribution_norm"),
                s("projection_on_y"),
                s("jacobian_fro_norm"),
            ]);
            for (i, t) in report.per_token.iter().enumerate() {
                put(vec![
                    i.to_string(),
                    t.token.clone(),
                    opt(report.attribution.per_token.get(i).copied()),
                    num(t.embedding_norm),
                    num(t.contribution_norm),
                    num(t.projection_on_y),
                    opt(t.jacobian_fro_norm),
                ]);
            }
        }
        View::Spectrum => {
            let svd = report.svd.as_ref();
            let mf = report.matrix_free.as_ref();
            let concat: Vec<f64> = match (svd, mf) {
                (Some(s), _) => s.concat.singular_values.clone(),
                (None, Some(m)) => m.singular_values.clone(),
                _ => return None,
            };
            let mut head = vec![s("k"), s("sigma_J_cat")];
            let per: Vec<&Vec<f64>> = svd
                .map(|s| s.per_token.iter().map(|p| &p.singular_values).collect())
                .unwrap_or_default();
            head.extend((0..per.len()).map(|i| format!("sigma_J_{i}")));
            put(head);
            for (k, c) in concat.iter().enumerate() {
                let mut f = vec![(k + 1).to_string(), num(*c)];
                f.extend(
                    per.iter()
                        .map(|p| p.get(k).map(|v| num(*v)).unwrap_or_default()),
                );
                put(f);
            }
            if let Some(s) = svd {
                let mut f = vec!["stable_rank".to_string(), num(s.concat.stable_rank)];
                f.extend(s.per_token.iter().map(|p| num(p.stable_rank)));
                put(f);
            }
        }
        View::Decode => {
            let d = report.decode.as_ref()?;
            put(vec![
                s("of"),
                s("k"),
                s("sigma"),
                s("u_tokens"),
                s("v_tokens"),
                s("v_position"),
            ]);
            for (of, pairs) in [("J_cat", &d.concat), ("J_last", &d.last_token)] {
                for p in pairs {
                    let words = |t: &[lens_protocol::report::TokenScore]| {
                        t.iter()
                            .map(|t| t.token.clone())
                            .collect::<Vec<_>>()
                            .join("|")
                    };
                    put(vec![
                        s(of),
                        p.k.to_string(),
                        num(p.sigma),
                        words(&p.u_tokens),
                        words(&p.v_tokens),
                        p.v_position.to_string(),
                    ]);
                }
            }
        }
        View::Layers => {
            if report.layers.is_empty() {
                return None;
            }
            put(vec![
                s("layer"),
                s("kind"),
                s("mode"),
                s("stable_rank"),
                s("sigma_1"),
                s("rel_error"),
                s("u1_top_token"),
                s("logit_lens_top_token"),
            ]);
            for r in &report.layers {
                put(vec![
                    r.layer.to_string(),
                    s(r.kind.name()),
                    r.mode.clone(),
                    num(r.stable_rank),
                    opt(r.singular_values.first().copied()),
                    num(r.rel_error),
                    r.u_tokens
                        .first()
                        .and_then(|t| t.first())
                        .map(|t| t.token.clone())
                        .unwrap_or_default(),
                    r.logit_lens_tokens
                        .first()
                        .map(|t| t.token.clone())
                        .unwrap_or_default(),
                ]);
            }
        }
        View::Path => {
            if report.path.is_empty() {
                return None;
            }
            put(vec![s("layer"), s("x"), s("y"), s("label")]);
            for p in &report.path {
                put(vec![
                    p.layer.to_string(),
                    num(p.x),
                    num(p.y),
                    p.label.clone(),
                ]);
            }
        }
        View::Attention => {
            let att = report.attention.as_ref()?;
            put(vec![s("layer"), s("head"), s("query"), s("key"), s("p")]);
            for (l, heads) in att.iter().enumerate() {
                for (h, rows) in heads.iter().enumerate() {
                    for (q, keys) in rows.iter().enumerate() {
                        for (k, p) in keys.iter().enumerate().take(q + 1) {
                            put(vec![
                                (l + 1).to_string(),
                                h.to_string(),
                                q.to_string(),
                                k.to_string(),
                                num(*p),
                            ]);
                        }
                    }
                }
            }
        }
        View::Heatmap => {
            let (h, c) = inspect?;
            put(vec![
                s("kind"),
                s("position"),
                s("row"),
                s("col"),
                s("value"),
                s("tokens"),
            ]);
            for r in 0..h.rows {
                for col in 0..h.cols {
                    put(vec![
                        s("cell"),
                        h.position.to_string(),
                        r.to_string(),
                        col.to_string(),
                        num(h.values[r * h.cols + col]),
                        String::new(),
                    ]);
                }
            }
            for (kind, lines) in [("column", &c.columns), ("row", &c.rows)] {
                for l in lines {
                    let words = l
                        .tokens
                        .iter()
                        .map(|t| t.token.clone())
                        .collect::<Vec<_>>()
                        .join("|");
                    put(vec![
                        s(kind),
                        c.position.to_string(),
                        l.index.to_string(),
                        String::new(),
                        num(l.norm),
                        words,
                    ]);
                }
            }
        }
        // Two Reports, not one: `comparison` below.
        View::Compare => return None,
        View::Steering => {
            let st = report.steering.as_ref()?;
            put(vec![
                s("source"),
                s("layer"),
                s("lambda"),
                s("steered"),
                s("unsteered"),
                s("source_token"),
                s("p_steered"),
                s("p_unsteered"),
            ]);
            put(vec![
                st.source.clone(),
                st.layer.to_string(),
                num(st.lambda),
                st.steered.clone(),
                st.unsteered.clone(),
                st.source_token.clone(),
                num(st.source_token_prob_steered),
                num(st.source_token_prob_unsteered),
            ]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lens_protocol::report::{Attribution, Contributions, Part, Prediction, TokenRow, TopToken};
    use lens_protocol::Precision;

    /// A Report of three tokens that need quoting, with their contributions.
    fn report() -> Report {
        let tokens = ["a,b", "say \"hi\"", "line\nbreak"];
        let mut r = Report::new(Prediction {
            model: "tiny".into(),
            precision: Precision::F64,
            token_ids: vec![4, 5, 6],
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            spans: vec![Some([0, 3]), Some([4, 12]), Some([13, 23])],
            top: vec![TopToken {
                id: 9,
                token: "=1+1".into(),
                logit: 2.5,
                prob: 0.25,
            }],
            ms: 1.0,
        });
        let row = |t: &str, k: f64| TokenRow {
            token: t.into(),
            embedding_norm: k,
            jacobian_fro_norm: None,
            contribution_norm: 2.0 * k,
            projection_on_y: 0.5,
        };
        r.apply(Part::Contributions(Contributions {
            rel_error: 1e-16,
            other_precision_rel_error: None,
            per_token: tokens
                .iter()
                .zip([1.0, 2.0, 3.0])
                .map(|(t, k)| row(t, k))
                .collect(),
            attribution: Attribution {
                target_id: 9,
                target_token: "=1+1".into(),
                logit: 2.5,
                per_token: vec![0.5, 1.0, 1.0],
                sum_rel_error: 0.0,
            },
            attribution_predicted: None,
            certificate: None,
            ms: 2.0,
        }));
        r
    }

    #[test]
    fn the_tokens_view_has_a_header_and_a_row_per_token_quoted_as_needed() {
        let out = csv(View::Tokens, &report(), None).expect("numbers");
        let expected = "position,token,attribution,embedding_norm,contribution_norm,\
                        projection_on_y,jacobian_fro_norm\n\
                        0,\"a,b\",5e-1,1e0,2e0,5e-1,\n\
                        1,\"say \"\"hi\"\"\",1e0,2e0,4e0,5e-1,\n\
                        2,\"line\nbreak\",1e0,3e0,6e0,5e-1,\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_token_that_a_spreadsheet_would_run_is_quoted() {
        let out = csv(View::Prediction, &report(), None).expect("numbers");
        assert_eq!(out, "rank,id,token,logit,prob\n1,9,\"=1+1\",2.5e0,2.5e-1\n");
    }

    #[test]
    fn a_view_without_numbers_yet_has_no_csv() {
        let r = report();
        assert_eq!(csv(View::Spectrum, &r, None), None);
        assert_eq!(csv(View::Heatmap, &r, None), None);
        assert_eq!(csv(View::Steering, &r, None), None);
        assert_eq!(csv(View::Layers, &r, None), None);
    }

    #[test]
    fn the_comparison_has_a_row_per_aligned_token() {
        use crate::view_data::CompareRow;
        use lens_protocol::report::AlignOp;
        let rows = vec![
            CompareRow {
                a: Some("x".into()),
                b: Some("y".into()),
                op: AlignOp::Substitute,
                share_a: Some(0.5),
                share_b: Some(0.25),
                change: -0.25,
            },
            CompareRow {
                a: None,
                b: Some(" z".into()),
                op: AlignOp::Insert,
                share_a: None,
                share_b: Some(1.0),
                change: 1.0,
            },
        ];
        let d = CompareData {
            rows,
            ..crate::view_data::tests::compare_fixture()
        };
        assert_eq!(
            comparison(&d),
            "a_token,b_token,op,share_a,share_b,change\nx,y,substitute,5e-1,2.5e-1,\"-2.5e-1\"\n,\" z\",insert,,1e0,1e0\n"
        );
    }
}
