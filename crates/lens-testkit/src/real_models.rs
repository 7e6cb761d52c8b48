//! The two real GGUF models (fetched by tools/fetch-models.sh into
//! `$LINEAR_LENS_MODELS` or ~/.cache/linear-lens), named by their id in the
//! app's catalog (`web/models.json`), the one table of models.

use std::path::PathBuf;

pub const GEMMA: &str = "gemma-3-270m";
pub const SMOLLM: &str = "smollm2-135m";

/// Path of a real model file; panics with the fix if it is missing (these
/// tests must fail, not skip, on a machine without the models).
pub fn model_path(id: &str) -> PathBuf {
    let catalog = lens_protocol::Catalog::builtin().expect("web/models.json");
    let file = catalog
        .gguf_file(id)
        .unwrap_or_else(|| panic!("`{id}` is not a one-file GGUF model of the catalog"));
    let dir = std::env::var_os("LINEAR_LENS_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache")
                .join("linear-lens")
        });
    let p = dir.join(&file.name);
    assert!(
        p.exists(),
        "{} is missing: run tools/fetch-models.sh first",
        p.display()
    );
    p
}
