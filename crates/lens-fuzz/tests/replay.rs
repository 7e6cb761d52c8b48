//! Every input that ever crashed a harness (`fuzz/regressions/<harness>/`,
//! kept by `tools/fuzz.sh`) through its harness, and the seeds
//! (`fuzz/seeds/<harness>/`, written by `examples/fuzz_seeds.rs`) where
//! they were made. A panic here is a regression; the harness's parser must
//! refuse such input with an error. The corpus the fuzzer grows lives
//! outside the repository and is replayed by `tools/fuzz.sh` itself.

use std::path::Path;

#[test]
fn every_past_crash_and_seed_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut regressions = 0;
    let mut ran = 0;
    for (name, harness) in lens_fuzz::HARNESSES {
        for kind in ["regressions", "seeds"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a saved input");
                eprintln!("{name}: {}", path.display());
                harness(&data);
                ran += 1;
                regressions += usize::from(kind == "regressions");
            }
        }
    }
    // The five past crashes are in git: a lost folder would pass silently.
    assert!(regressions >= 5, "only {regressions} regressions found");
    eprintln!("{ran} saved inputs ran clean");
}
