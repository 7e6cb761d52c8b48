//! The analysis state a share link carries, as a URL fragment:
//! `#model=gemma-3-270m&prompt=The%20bridge…&precision=f64&view=tokens&token=3`.
//! Parsing never fails: unknown keys are ignored, bad values fall back to
//! the defaults, and the prompt is cut at [`MAX_PROMPT_CHARS`].

pub use lens_report::SvdMode;
use serde::{Deserialize, Serialize};

/// Longest prompt a link may carry (characters).
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Longest model reference a link may carry (characters).
pub const MAX_MODEL_CHARS: usize = 400;

pub use lens_report::Precision;

/// Which view has the focus (and which one an `embed` link shows alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum View {
    #[default]
    Prediction,
    Exactness,
    Tokens,
    Spectrum,
    Decode,
    Layers,
    Path,
    Attention,
    Heatmap,
    Steering,
    /// Two runs compared (A pinned, B the run on screen).
    Compare,
}

impl View {
    pub const ALL: [View; 11] = [
        View::Prediction,
        View::Exactness,
        View::Tokens,
        View::Spectrum,
        View::Decode,
        View::Layers,
        View::Path,
        View::Attention,
        View::Heatmap,
        View::Steering,
        View::Compare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            View::Prediction => "prediction",
            View::Exactness => "exactness",
            View::Tokens => "tokens",
            View::Spectrum => "spectrum",
            View::Decode => "decode",
            View::Layers => "layers",
            View::Path => "path",
            View::Attention => "attention",
            View::Heatmap => "heatmap",
            View::Steering => "steering",
            View::Compare => "compare",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        View::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where the worker computes the passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// WebGPU when the browser offers an adapter, the CPU otherwise.
    #[default]
    Auto,
    /// WebGPU (f32); the run fails with a clear error when no adapter exists.
    Webgpu,
    /// The CPU (f64 or f32).
    Cpu,
}

impl BackendChoice {
    pub const ALL: [BackendChoice; 3] = [
        BackendChoice::Auto,
        BackendChoice::Webgpu,
        BackendChoice::Cpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Webgpu => "webgpu",
            BackendChoice::Cpu => "cpu",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        BackendChoice::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The steering panel's inputs: `source`'s operator at `layer` steers the
/// continuation of `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerSpec {
    pub source: String,
    pub text: String,
    /// 1-based; `None`: the paper's default ⌊2L/3⌋.
    pub layer: Option<usize>,
    pub lambda: f64,
    pub tokens: usize,
}

impl Default for SteerSpec {
    fn default() -> Self {
        Self {
            source: "The bridge is the Golden".into(),
            text: "I went to new york to see the".into(),
            layer: None,
            lambda: 1.028,
            tokens: 8,
        }
    }
}

/// A comparison's side A, pinned while the page's prompt (and model,
/// precision) is side B: `a_prompt=…&a_model=…&a_precision=…&a_snap=…`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareSpec {
    pub prompt: String,
    /// A's model when it is not B's.
    pub model: Option<String>,
    /// A's precision when it is not B's.
    pub precision: Option<Precision>,
    /// A's results as the link's author saw them (like `snapshot`).
    pub snapshot: Option<String>,
}

impl CompareSpec {
    /// Side A as `prompt` on B's model and precision.
    pub fn of(prompt: String) -> Self {
        CompareSpec {
            prompt,
            model: None,
            precision: None,
            snapshot: None,
        }
    }
}

/// Most layers a link may ask for.
pub const MAX_LAYERS: usize = 128;
/// Most tokens a steered continuation may have.
pub const MAX_STEER_TOKENS: usize = 64;
/// Longest snapshot a link may carry (characters of its JSON).
pub const MAX_SNAPSHOT_CHARS: usize = 8000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// A catalog id, `hf:owner/repo`, or a URL of a `.gguf` file.
    pub model: String,
    pub prompt: String,
    pub precision: Precision,
    pub view: View,
    /// The selected token (position in the prompt).
    pub token: Option<usize>,
    pub svd: SvdMode,
    /// Where the passes run (`backend=` in the link; omitted for auto).
    pub backend: BackendChoice,
    /// 1-based layers whose curves were asked for (computed on demand).
    pub layers: Vec<usize>,
    /// The attention view's 1-based layer and 0-based head.
    pub attn_layer: usize,
    pub attn_head: usize,
    /// The steering panel's inputs, and whether it was run.
    pub steer: SteerSpec,
    pub steer_run: bool,
    /// Classroom mode at this step (0-based).
    pub classroom: Option<usize>,
    /// Show this view alone (slides, blog posts).
    pub embed: Option<View>,
    /// The results as the link's author saw them (raw JSON, parsed by the
    /// page as untrusted data).
    pub snapshot: Option<String>,
    /// The token whose logit is attributed (`target=`; `None`: the
    /// predicted one).
    pub target: Option<String>,
    /// A comparison: side A pinned, this analysis side B.
    pub compare: Option<CompareSpec>,
    /// The app version that made the link (`v=`): opened on another, the
    /// page says that the numbers may differ.
    pub made_with: Option<String>,
    /// SHA-256 of the model file the link's author had loaded (`sha=`).
    pub model_sha256: Option<String>,
}

impl AnalysisSpec {
    pub fn new(model: &str, prompt: &str) -> Self {
        Self {
            model: model.to_string(),
            prompt: prompt.to_string(),
            precision: Precision::default(),
            view: View::default(),
            token: None,
            svd: SvdMode::Auto,
            backend: BackendChoice::Auto,
            layers: Vec::new(),
            attn_layer: 1,
            attn_head: 0,
            steer: SteerSpec::default(),
            steer_run: false,
            classroom: None,
            embed: None,
            snapshot: None,
            target: None,
            compare: None,
            made_with: None,
            model_sha256: None,
        }
    }

    /// The model side A runs on.
    pub fn model_a(&self) -> &str {
        self.compare
            .as_ref()
            .and_then(|c| c.model.as_deref())
            .unwrap_or(&self.model)
    }

    /// The fragment (without `#`); settings at their defaults are left out.
    pub fn to_fragment(&self) -> String {
        let mut out = format!(
            "model={}&prompt={}&precision={}&view={}",
            encode(&self.model),
            encode(&self.prompt),
            self.precision.name(),
            self.view.as_str()
        );
        let mut put = |k: &str, v: String| out.push_str(&format!("&{k}={v}"));
        if let Some(t) = self.token {
            put("token", t.to_string());
        }
        if self.svd != SvdMode::Auto {
            put("svd", self.svd.as_str().into());
        }
        if self.backend != BackendChoice::Auto {
            put("backend", self.backend.as_str().into());
        }
        if !self.layers.is_empty() {
            let l: Vec<String> = self.layers.iter().map(|l| l.to_string()).collect();
            put("layers", l.join(","));
        }
        if (self.attn_layer, self.attn_head) != (1, 0) {
            put("attn", format!("{}.{}", self.attn_layer, self.attn_head));
        }
        let d = SteerSpec::default();
        let st = &self.steer;
        if st.source != d.source {
            put("steer_source", encode(&st.source));
        }
        if st.text != d.text {
            put("steer_text", encode(&st.text));
        }
        if let Some(l) = st.layer {
            put("steer_layer", l.to_string());
        }
        if st.lambda != d.lambda {
            put("steer_lambda", st.lambda.to_string());
        }
        if st.tokens != d.tokens {
            put("steer_tokens", st.tokens.to_string());
        }
        if self.steer_run {
            put("steer", "1".into());
        }
        if let Some(c) = self.classroom {
            put("classroom", c.to_string());
        }
        if let Some(v) = self.embed {
            put("embed", v.as_str().into());
        }
        if let Some(t) = &self.target {
            put("target", encode(t));
        }
        if let Some(c) = &self.compare {
            put("a_prompt", encode(&c.prompt));
            if let Some(m) = &c.model {
                put("a_model", encode(m));
            }
            if let Some(p) = c.precision {
                put("a_precision", p.name().into());
            }
            if let Some(snap) = &c.snapshot {
                put("a_snap", encode(snap));
            }
        }
        if let Some(v) = &self.made_with {
            put("v", encode(v));
        }
        if let Some(h) = &self.model_sha256 {
            put("sha", h.clone());
        }
        if let Some(snap) = &self.snapshot {
            put("snap", encode(snap));
        }
        out
    }

    /// Reads a fragment (with or without `#`) over `defaults`; `None` when it
    /// names neither a model nor a prompt (an ordinary visit).
    pub fn from_fragment(fragment: &str, defaults: &AnalysisSpec) -> Option<Self> {
        let fragment = fragment.strip_prefix('#').unwrap_or(fragment);
        let mut spec = defaults.clone();
        // A link states its whole analysis: what it leaves out is the default.
        spec.snapshot = None;
        spec.made_with = None;
        spec.model_sha256 = None;
        spec.target = None;
        spec.compare = None;
        let mut named = false;
        let mut a = CompareSpec {
            prompt: String::new(),
            model: None,
            precision: None,
            snapshot: None,
        };
        let text = |v: &str| -> String { v.chars().take(MAX_PROMPT_CHARS).collect() };
        for pair in fragment.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(value) = decode(value) else { continue };
            match key {
                "model" if !value.trim().is_empty() => {
                    // Trimmed after the cut too: a name cut just before a
                    // space would read back shorter (state → link → state).
                    let cut: String = value.trim().chars().take(MAX_MODEL_CHARS).collect();
                    spec.model = cut.trim_end().to_string();
                    named = true;
                }
                "prompt" => {
                    spec.prompt = text(&value);
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
                "svd" => spec.svd = SvdMode::parse(&value).unwrap_or_default(),
                "backend" => spec.backend = BackendChoice::parse(&value).unwrap_or_default(),
                "layers" => spec.layers = parse_layers(&value),
                "attn" => {
                    let (l, h) = value.split_once('.').unwrap_or((&value, "0"));
                    if let (Ok(l), Ok(h)) = (l.parse::<usize>(), h.parse::<usize>()) {
                        if (1..=MAX_LAYERS).contains(&l) && h < 1024 {
                            spec.attn_layer = l;
                            spec.attn_head = h;
                        }
                    }
                }
                "steer_source" => spec.steer.source = text(&value),
                "steer_text" => spec.steer.text = text(&value),
                "steer_layer" => {
                    spec.steer.layer = value.parse().ok().filter(|l| (1..=MAX_LAYERS).contains(l))
                }
                "steer_lambda" => {
                    if let Ok(x) = value.parse::<f64>() {
                        if x.is_finite() && x.abs() <= 1000.0 {
                            spec.steer.lambda = x;
                        }
                    }
                }
                "steer_tokens" => {
                    if let Ok(t) = value.parse::<usize>() {
                        spec.steer.tokens = t.clamp(1, MAX_STEER_TOKENS);
                    }
                }
                "steer" => spec.steer_run = value == "1",
                "classroom" => spec.classroom = value.parse().ok().map(|c: usize| c.min(64)),
                "embed" => spec.embed = View::parse(&value),
                "v" => {
                    spec.made_with = Some(value.trim())
                        .filter(|v| {
                            !v.is_empty()
                                && v.len() <= 64
                                && v.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || ".+-_".contains(c))
                        })
                        .map(str::to_string)
                }
                "sha" => {
                    spec.model_sha256 = Some(value.trim().to_ascii_lowercase())
                        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                }
                "snap" if value.len() <= MAX_SNAPSHOT_CHARS => spec.snapshot = Some(value),
                "target" if !value.is_empty() => {
                    spec.target = Some(value.chars().take(MAX_MODEL_CHARS).collect())
                }
                "a_prompt" => a.prompt = text(&value),
                "a_model" if !value.trim().is_empty() => {
                    let cut: String = value.trim().chars().take(MAX_MODEL_CHARS).collect();
                    a.model = Some(cut.trim_end().to_string());
                }
                "a_precision" => a.precision = Precision::parse(&value),
                "a_snap" if value.len() <= MAX_SNAPSHOT_CHARS => a.snapshot = Some(value),
                _ => {}
            }
        }
        if !a.prompt.trim().is_empty() {
            spec.compare = Some(a);
        }
        named.then_some(spec)
    }
}

/// `"1,3, 5"` → `[1, 3, 5]`: sorted, deduplicated, each in `1..=MAX_LAYERS`;
/// anything else is dropped.
pub fn parse_layers(s: &str) -> Vec<usize> {
    let mut out: Vec<usize> = s
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .filter(|l| (1..=MAX_LAYERS).contains(l))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
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
        spec.svd = SvdMode::Krylov;
        spec.layers = vec![1, 6, 12];
        spec.attn_layer = 3;
        spec.attn_head = 2;
        spec.steer.source = "a <b>source</b> & more".into();
        spec.steer.lambda = 0.5;
        spec.steer.layer = Some(12);
        spec.steer.tokens = 4;
        spec.steer_run = true;
        spec.classroom = Some(3);
        spec.embed = Some(View::Heatmap);
        spec.snapshot = Some(r#"{"top":" the","sigma":[12.3]}"#.into());
        spec.made_with = Some("0.1.0+1a2b3c4d5e6f".into());
        spec.model_sha256 = Some("a5".repeat(32));
        spec.target = Some(" Paris & co".into());
        spec.compare = Some(CompareSpec {
            prompt: "The capital of Italy is".into(),
            model: Some("smollm2-135m".into()),
            precision: Some(Precision::F32),
            snapshot: Some(r#"{"top":" Rome"}"#.into()),
        });
        let frag = spec.to_fragment();
        assert!(!frag.contains('<') && !frag.contains(' ') && !frag.contains('#'));
        assert_eq!(
            AnalysisSpec::from_fragment(&format!("#{frag}"), &defaults()),
            Some(spec)
        );
    }

    /// Found by the link harness's round trip: a model name cut at its
    /// limit just after a space read back one character shorter.
    #[test]
    fn a_model_name_cut_at_its_limit_reads_back_the_same() {
        let long = format!("{} tail", "m".repeat(MAX_MODEL_CHARS - 1));
        let frag = format!("model={}&prompt=x", long.replace(' ', "%20"));
        let once = AnalysisSpec::from_fragment(&frag, &defaults()).expect("a link");
        assert_eq!(once.model, "m".repeat(MAX_MODEL_CHARS - 1));
        let twice = AnalysisSpec::from_fragment(&once.to_fragment(), &defaults());
        assert_eq!(twice, Some(once));
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
        let s = AnalysisSpec::from_fragment(
            "prompt=hi&layers=3,x,0,1,3,999&steer_lambda=NaN&steer_tokens=9999&attn=2.x&embed=nope",
            &defaults(),
        )
        .expect("prompt");
        assert_eq!(s.layers, vec![1, 3]);
        assert_eq!(s.steer.lambda, SteerSpec::default().lambda);
        assert_eq!(s.steer.tokens, MAX_STEER_TOKENS);
        assert_eq!((s.attn_layer, s.attn_head), (1, 0));
        assert_eq!(s.embed, None);
        // A version or a model hash that is not one is dropped.
        let s = AnalysisSpec::from_fragment("prompt=hi&v=%3Cb%3E&sha=xyz", &defaults())
            .expect("prompt");
        assert_eq!((s.made_with, s.model_sha256), (None, None));
        let s =
            AnalysisSpec::from_fragment(&format!("prompt=hi&sha={}", "AB".repeat(32)), &defaults())
                .expect("prompt");
        assert_eq!(s.model_sha256, Some("ab".repeat(32)));
    }
}
