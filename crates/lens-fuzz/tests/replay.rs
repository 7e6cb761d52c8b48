//! Every saved fuzz input through its harness: the corpus the fuzzer kept
//! (`fuzz/corpus/<harness>/`, the inputs that reach new code) and every
//! input that ever crashed a harness (`fuzz/regressions/<harness>/`, kept by
//! `tools/fuzz.sh`). A panic here is a regression; the harness's parser
//! must refuse such input with an error.

use std::path::Path;

#[test]
fn the_saved_corpus_and_every_past_crash_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut ran = 0;
    for (name, harness) in lens_fuzz::HARNESSES {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a saved input");
                eprintln!("{name}: {}", path.display());
                harness(&data);
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no saved inputs for the `{name}` harness");
        ran += inputs;
    }
    eprintln!("{ran} saved inputs ran clean");
}
