//! The analysis state a share link carries, as a URL fragment:
//! `#model=gemma-3-270m&prompt=The%20bridge…&precision=f64&view=tokens&token=3`.
//! Parsing never fails: unknown keys are ignored, bad values fall back to
//! the defaults, and the prompt is cut at [`MAX_PROMPT_CHARS`].

use serde::{Deserialize, Serialize};

/// Longest prompt a link may carry (characters).
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Longest model reference a link may carry (characters).
pub const MAX_MODEL_CHARS: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F64,
    F32,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F64 => "f64",
            Precision::F32 => "f32",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f64" => Some(Precision::F64),
            "f32" => Some(Precision::F32),
            _ => None,
        }
    }
}

/// Which view has the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum View {
    #[default]
    Prediction,
    Exactness,
    Tokens,
    Spectrum,
}

impl View {
    pub const ALL: [View; 4] = [
        View::Prediction,
        View::Exactness,
        View::Tokens,
        View::Spectrum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            View::Prediction => "prediction",
            View::Exactness => "exactness",
            View::Tokens => "tokens",
            View::Spectrum => "spectrum",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        View::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// A catalog id, `hf:owner/repo`, or a URL of a `.gguf` file.
    pub model: String,
    pub prompt: String,
    pub precision: Precision,
    pub view: View,
    /// The selected token (position in the prompt).
    pub token: Option<usize>,
}

impl AnalysisSpec {
    pub fn new(model: &str, prompt: &str) -> Self {
        Self {
            model: model.to_string(),
            prompt: prompt.to_string(),
            precision: Precision::default(),
            view: View::default(),
            token: None,
        }
    }

    /// The fragment (without `#`).
    pub fn to_fragment(&self) -> String {
        let mut out = format!(
            "model={}&prompt={}&precision={}&view={}",
            encode(&self.model),
            encode(&self.prompt),
            self.precision.as_str(),
            self.view.as_str()
        );
        if let Some(t) = self.token {
            out.push_str(&format!("&token={t}"));
        }
        out
    }

    /// Reads a fragment (with or without `#`) over `defaults`; `None` when it
    /// names neither a model nor a prompt (an ordinary visit).
    pub fn from_fragment(fragment: &str, defaults: &AnalysisSpec) -> Option<Self> {
        let fragment = fragment.strip_prefix('#').unwrap_or(fragment);
        let mut spec = defaults.clone();
        let mut named = false;
        for pair in fragment.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(value) = decode(value) else { continue };
            match key {
                "model" if !value.trim().is_empty() => {
                    spec.model = value.trim().chars().take(MAX_MODEL_CHARS).collect();
                    named = true;
                }
                "prompt" => {
                    spec.prompt = value.chars().take(MAX_PROMPT_CHARS).collect();
                    named = true;
                }
                "precision" => {
                    if let Some(p) = Precision::parse(&value) {
                        spec.precision = p;
                    }
                }
                "view" => {
                    if let Some(v) = View::parse(&value) {
                        spec.view = v;
                    }
                }
                "token" => spec.token = value.parse().ok(),
                _ => {}
            }
        }
        named.then_some(spec)
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (as a space); `None` on a broken escape or
/// bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AnalysisSpec {
        AnalysisSpec::new("gemma-3-270m", "The capital of France is")
    }

    #[test]
    fn round_trips_unicode_and_markup() {
        let mut spec = AnalysisSpec::new(
            "hf:Qwen/Qwen3-0.6B",
            "<img src=x onerror=alert(1)> & é 😀 #=%",
        );
        spec.precision = Precision::F32;
        spec.view = View::Spectrum;
        spec.token = Some(4);
        let frag = spec.to_fragment();
        assert!(!frag.contains('<') && !frag.contains(' ') && !frag.contains('#'));
        assert_eq!(
            AnalysisSpec::from_fragment(&format!("#{frag}"), &defaults()),
            Some(spec)
        );
    }

    #[test]
    fn bad_values_fall_back_and_empty_is_none() {
        assert_eq!(AnalysisSpec::from_fragment("", &defaults()), None);
        assert_eq!(
            AnalysisSpec::from_fragment("#view=spectrum", &defaults()),
            None
        );
        let s = AnalysisSpec::from_fragment(
            "prompt=hi&precision=f16&view=nope&token=x&model=%ZZ",
            &defaults(),
        )
        .expect("names a prompt");
        assert_eq!(s.prompt, "hi");
        assert_eq!(s.model, "gemma-3-270m");
        assert_eq!(s.precision, Precision::F64);
        assert_eq!(s.view, View::Prediction);
        assert_eq!(s.token, None);
        let long = "a".repeat(MAX_PROMPT_CHARS + 10);
        let s =
            AnalysisSpec::from_fragment(&format!("prompt={long}"), &defaults()).expect("prompt");
        assert_eq!(s.prompt.len(), MAX_PROMPT_CHARS);
    }
}
