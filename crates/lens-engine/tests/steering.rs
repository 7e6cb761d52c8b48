//! Steering on a real model (Gemma 3 270M): a source prompt's operator,
//! added while another text generates, changes the continuation and raises
//! the probability of the source's own next token; λ = 0 changes nothing;
//! bad settings are typed errors.

use lens_engine::analysis::steering::{steer, SteerOptions};
use lens_engine::forward::Precision;
use lens_engine::jacobian::PassOptions;
use lens_engine::Model;
use lens_testkit::real_models::{model_path, GEMMA};

const SOURCE: &str = "The bridge is the Golden";
const TEXT: &str = "I went to new york to see the";

#[test]
fn steering_changes_the_continuation_towards_the_source() {
    let model = Model::load_path(&model_path(GEMMA)).unwrap();
    let opts = SteerOptions {
        lambda: 1.0,
        tokens: 4,
        ..SteerOptions::new(&model, SOURCE)
    };
    assert_eq!(opts.layer, 12, "⌊2L/3⌋ of 18 layers");
    let s = steer(&model, TEXT, &opts, Precision::F32, PassOptions::default()).unwrap();
    eprintln!(
        "steered {:?}, unsteered {:?}; p({:?}) {:.3e} steered vs {:.3e}",
        s.steered,
        s.unsteered,
        s.source_token,
        s.source_token_prob_steered,
        s.source_token_prob_unsteered
    );
    // The source's token is the source prompt's own prediction.
    let source_top = lens_engine::predict(&model, SOURCE, Precision::F32, 1).unwrap();
    assert_eq!(s.source_token, source_top.top[0].token);
    assert_eq!(s.steered_ids.len(), 4);
    assert_ne!(s.steered_ids, s.unsteered_ids, "λ > 0 changes the text");
    assert!(
        s.source_token_prob_steered > 1.5 * s.source_token_prob_unsteered,
        "{} vs {}",
        s.source_token_prob_steered,
        s.source_token_prob_unsteered
    );

    // λ = 0 is plain greedy decoding.
    let zero = SteerOptions {
        lambda: 0.0,
        ..opts.clone()
    };
    let z = steer(&model, TEXT, &zero, Precision::F32, PassOptions::default()).unwrap();
    assert_eq!(z.steered_ids, z.unsteered_ids);
    assert_eq!(z.unsteered_ids, s.unsteered_ids);
    let plain = lens_engine::predict(&model, TEXT, Precision::F32, 1).unwrap();
    assert_eq!(plain.top[0].id, z.unsteered_ids[0]);

    for bad in [
        SteerOptions {
            layer: 0,
            ..opts.clone()
        },
        SteerOptions {
            layer: 19,
            ..opts.clone()
        },
        SteerOptions {
            lambda: f64::NAN,
            ..opts.clone()
        },
        SteerOptions {
            source: String::new(),
            ..opts.clone()
        },
    ] {
        let e = steer(&model, TEXT, &bad, Precision::F32, PassOptions::default()).unwrap_err();
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}
