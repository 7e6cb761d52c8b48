//! `linear-lens`: the engine on the command line.

mod bench;
mod compare;
mod npy;
mod serve;
mod terminal;

use clap::{Parser, Subcommand};
use lens_engine::forward::Precision;
use lens_local::load;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "linear-lens",
    version,
    about = "The equivalent linear mapping of small language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the passes run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Cpu,
    Gpu,
}

/// What a run computes: `analyze`'s and `compare`'s options.
#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = "f64")]
    precision: Precision,
    /// 1-based layers whose taps (layer/attn/mlp, cumulative/layerwise) to compute, e.g. 1,6,12,18.
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Skip the ordinary (nothing frozen) Jacobian.
    #[arg(long)]
    no_ordinary: bool,
    /// Singular values kept per spectrum (J_cat and each J_i); 0 skips the SVD.
    #[arg(long, default_value_t = 16)]
    svd: usize,
    /// Singular pairs decoded into tokens (J_cat and the last token's J_i).
    #[arg(long, default_value_t = 5)]
    decode: usize,
    /// Token whose logit is attributed to the input tokens, e.g. " Paris" or id:123
    /// (default: the predicted one).
    #[arg(long)]
    target: Option<String>,
    /// Largest columns and rows of the last token's J_i, decoded; 0 skips.
    #[arg(long, default_value_t = 5)]
    columns: usize,
    /// Leave the attention probabilities out of the report.
    #[arg(long)]
    no_attention: bool,
    /// Do not form J: the top singular triplets of J_cat by block Lanczos on
    /// probe products (for long prompts).
    #[arg(long)]
    matrix_free: bool,
    /// How far the run goes: shares (the prediction and each token's share
    /// of the target's logit, one transpose pass), contributions (the c_i
    /// too), full.
    #[arg(long, default_value = "full", value_parser = parse_extent)]
    extent: lens_engine::analysis::Extent,
}

fn parse_extent(s: &str) -> Result<lens_engine::analysis::Extent, String> {
    lens_engine::analysis::Extent::parse(s)
        .ok_or_else(|| format!("`{s}` is not one of shares, contributions, full"))
}

impl RunArgs {
    fn options(self) -> lens_engine::analysis::AnalyzeOptions {
        lens_engine::analysis::AnalyzeOptions {
            top: self.top,
            layers: self.layers,
            ordinary: !self.no_ordinary,
            svd: self.svd,
            decode: self.decode,
            target: self.target,
            columns: self.columns,
            attention: !self.no_attention,
            extent: self.extent,
            svd_mode: if self.matrix_free {
                lens_engine::analysis::SvdMode::Krylov
            } else {
                lens_engine::analysis::SvdMode::Full
            },
            ..lens_engine::analysis::AnalyzeOptions::new(self.precision)
        }
    }
}

/// `text` as JSON to `path` ("-": stdout).
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    if path.as_os_str() == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Top next-token predictions for a prompt.
    Predict {
        /// A .gguf file, a Hugging Face model directory, or a known id (gemma-3-270m, smollm2-135m).
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The detached Jacobian of a prompt: exactness, per-token norms, layer taps.
    Analyze {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        run: RunArgs,
        /// Steer the continuation of --prompt with this source prompt's operator
        /// (its cumulative detached Jacobian at --steer-layer).
        #[arg(long)]
        steer_source: Option<String>,
        /// Steering strength λ.
        #[arg(long, default_value_t = 1.028)]
        steer_lambda: f64,
        /// 1-based layer (default: ⌊2L/3⌋).
        #[arg(long)]
        steer_layer: Option<usize>,
        /// Tokens to generate, steered and unsteered.
        #[arg(long, default_value_t = 12)]
        steer_tokens: usize,
        /// `cpu` (at --precision), or `gpu`: the run on wgpu's first adapter
        /// in f32, certified against the f64 CPU pass.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// Write the report as JSON to this file ("-" for stdout).
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Two analyses lined up: prompt A against prompt B (or model A against
    /// model B), the target logit's exact change split over the aligned tokens.
    Compare {
        /// Model A (and B, without --model-b).
        #[arg(long)]
        model: String,
        /// Prompt A.
        #[arg(long)]
        prompt: String,
        /// Prompt B (default: prompt A, to compare two models).
        #[arg(long)]
        prompt_b: Option<String>,
        /// Model B: another model on the same sentence(s), lined up by characters.
        #[arg(long)]
        model_b: Option<String>,
        #[command(flatten)]
        run: RunArgs,
        /// Write `{ "a": Report, "b": Report, "comparison": … }` as JSON to this file ("-" for stdout).
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Time the full detached Jacobian (one JSON object on stdout).
    Bench {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "f64")]
        precision: Precision,
        /// Threads for the matrix products (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Runs; the best time is reported.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Also write J as a .npy f64 array [n, d, d] (J[i][o][c] = ∂y_o/∂x_ic).
        #[arg(long)]
        save_jacobian: Option<std::path::PathBuf>,
        /// `cpu`, or `gpu`: the passes on wgpu's first adapter in f32
        /// (the report adds the adapter and the GEMM kernel's rate).
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// With `--backend gpu`: the optional WebGPU features the kernels
        /// may use, `auto` (all the adapter has), `none`, or a list of
        /// `f16` and `subgroups`.
        #[arg(long, default_value = "auto")]
        gpu_features: String,
    },
    /// Serve the web page (trunk's dist) and the model cache on 127.0.0.1.
    Serve {
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The trunk build to serve at `/`.
        #[arg(long, default_value = "dist")]
        dist: std::path::PathBuf,
        /// Directory served at `/models/` (default: the model cache).
        #[arg(long)]
        models: Option<std::path::PathBuf>,
        /// Connections open at once; more wait until one closes.
        #[arg(long, default_value_t = 64)]
        max_connections: usize,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's message up to its usage/help footer.
            let msg = e.to_string();
            let text: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", text.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Predict {
            model,
            prompt,
            top,
            precision,
            json,
        } => {
            let m = load(&model)?;
            let p = lens_engine::predict(&m, &prompt, precision, top).map_err(|e| e.to_string())?;
            if json {
                let out = serde_json::json!({
                    "model": model,
                    "precision": precision.name(),
                    "token_ids": p.token_ids,
                    "tokens": p.tokens,
                    "top": p.top,
                });
                println!("{out}");
            } else {
                println!(
                    "model: {model} ({})  precision: {}",
                    m.config.arch.name(),
                    precision.name()
                );
                println!("tokens ({}): {:?}", p.token_ids.len(), p.tokens);
                for t in &p.top {
                    println!(
                        "{:>8} {:>10.4} {:>8.4}  {:?}",
                        t.id, t.logit, t.prob, t.token
                    );
                }
            }
            Ok(())
        }
        Command::Bench {
            model,
            prompt,
            precision,
            threads,
            repeat,
            save_jacobian,
            backend,
            gpu_features,
        } => {
            if let Some(t) = threads {
                if t == 0 {
                    return Err("--threads must be at least 1".into());
                }
                // candle reads this on every matmul.
                std::env::set_var("RAYON_NUM_THREADS", t.to_string());
            }
            if backend != Backend::Gpu && gpu_features != "auto" {
                return Err("--gpu-features works with --backend gpu".into());
            }
            let report = match backend {
                Backend::Cpu => bench::run(
                    &model,
                    &load(&model)?,
                    &prompt,
                    precision,
                    repeat,
                    save_jacobian.as_deref(),
                )?,
                Backend::Gpu => {
                    if save_jacobian.is_some() {
                        return Err("--save-jacobian works with --backend cpu".into());
                    }
                    let options =
                        lens_gpu::GpuOptions::parse(&gpu_features).map_err(|e| e.to_string())?;
                    bench::run_gpu(&model, &load(&model)?, &prompt, repeat, options)?
                }
            };
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Analyze {
            model,
            prompt,
            run,
            steer_source,
            steer_lambda,
            steer_layer,
            steer_tokens,
            backend,
            json,
        } => {
            let m = load(&model)?;
            let steer = steer_source.map(|src| {
                let mut so = lens_engine::analysis::steering::SteerOptions::new(&m, &src);
                so.lambda = steer_lambda;
                so.tokens = steer_tokens;
                if let Some(l) = steer_layer {
                    so.layer = l;
                }
                so
            });
            let opts = lens_engine::analysis::AnalyzeOptions {
                steer,
                ..run.options()
            };
            let gpu = match backend {
                Backend::Cpu => None,
                Backend::Gpu => {
                    Some(lens_gpu::block_on(lens_gpu::Gpu::new()).map_err(|e| e.to_string())?)
                }
            };
            let report = terminal::run(&m, &prompt, &opts, gpu.as_ref())?;
            match json {
                Some(path) => write_json(&path, &report)?,
                None => print_analysis(&report),
            }
            Ok(())
        }
        Command::Compare {
            model,
            prompt,
            prompt_b,
            model_b,
            run,
            json,
        } => {
            if prompt_b.is_none() && model_b.is_none() {
                return Err("compare needs --prompt-b, --model-b, or both".into());
            }
            let m = load(&model)?;
            // The same model named twice is one model (aligned by token ids).
            let mb = match model_b.filter(|b| *b != model) {
                Some(b) => Some(load(&b)?),
                None => None,
            };
            let prompt_b = prompt_b.unwrap_or_else(|| prompt.clone());
            let (a, b, comparison) =
                terminal::compare(&m, &prompt, mb.as_ref(), &prompt_b, &run.options())?;
            match json {
                Some(path) => write_json(
                    &path,
                    &serde_json::json!({ "a": a.report, "b": b.report, "comparison": comparison }),
                )?,
                None => compare::print(&a.report, &b.report, &comparison),
            }
            Ok(())
        }
        Command::Serve {
            port,
            dist,
            models,
            max_connections,
        } => serve::run(port, &dist, models, max_connections),
    }
}

fn print_analysis(r: &lens_engine::analysis::Report) {
    println!("model: {}  precision: {:?}", r.model, r.precision);
    println!("tokens ({}): {:?}", r.tokens.len(), r.tokens);
    for t in &r.top {
        println!("  next {:>10.4} {:>8.4}  {:?}", t.logit, t.prob, t.token);
    }
    let rec = &r.reconstruction;
    println!("reconstruction ‖Σ J_i x_i − y‖/‖y‖:");
    match rec.detached_rel_error {
        Some(e) => println!("  detached      {e:.3e}"),
        None => println!("  detached      (J not formed: --matrix-free)"),
    }
    println!("  contributions {:.3e}", rec.contributions_rel_error);
    if let Some(o) = rec.ordinary_rel_error {
        println!("  ordinary      {o:.3e}  (not frozen: no exact reconstruction)");
    }
    let a = &r.attribution;
    println!(
        "per token: ‖J_i‖_F  ‖J_i x_i‖  c_i·y/‖y‖  logit of {:?} (= {:.4}; attribution sums to it within {:.1e})",
        a.target_token, a.logit, a.sum_rel_error
    );
    for (t, share) in r.per_token.iter().zip(&a.per_token) {
        println!(
            "  {:>10} {:>10.4} {:>10.4} {:>10.4}  {:?}",
            t.jacobian_fro_norm
                .map_or("-".to_string(), |f| format!("{f:.4}")),
            t.contribution_norm,
            t.projection_on_y,
            share,
            t.token
        );
    }
    if let Some(svd) = &r.svd {
        let s = &svd.concat;
        println!(
            "SVD of J_cat: stable rank {:.3}, σ = {}",
            s.stable_rank,
            join(&s.singular_values, 6)
        );
        if let Some(last) = svd.per_token.last() {
            println!(
                "SVD of the last token's J_i: stable rank {:.3}, σ = {}",
                last.stable_rank,
                join(&last.singular_values, 6)
            );
        }
    }
    if let Some(mf) = &r.matrix_free {
        println!(
            "matrix-free ({}; {} products, {} blocks): σ = {}",
            mf.method,
            mf.products,
            mf.blocks,
            join(&mf.singular_values, 8)
        );
        println!(
            "  residuals ‖J v − σ u‖: {}",
            mf.residuals
                .iter()
                .map(|r| format!("{r:.1e}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(d) = &r.decode {
        for (name, pairs) in [("J_cat", &d.concat), ("last token's J_i", &d.last_token)] {
            if pairs.is_empty() {
                continue;
            }
            println!("decoded singular vectors of {name}:");
            for p in pairs {
                println!(
                    "  {:>2} σ={:<9.4} u → {}   v (pos {}) → {}",
                    p.k,
                    p.sigma,
                    words(&p.u_tokens),
                    p.v_position,
                    words(&p.v_tokens)
                );
            }
        }
    }
    if let Some(c) = &r.columns {
        println!(
            "largest columns of J_{} (input coordinates → output words):",
            c.position
        );
        for l in &c.columns {
            println!(
                "  col {:>4} ‖·‖={:<9.4} → {}",
                l.index,
                l.norm,
                words(&l.tokens)
            );
        }
    }
    if !r.layers.is_empty() {
        println!("layers: stable rank, σ₁, u₁ → tokens | logit lens (the tap's vector decoded)");
    }
    for l in &r.layers {
        println!(
            "  layer {:>3} {:<5} {:<10} rel error {:.1e}  rank {:>8.3}  σ₁ {:>9.4}  u₁ → {:<40} | {}",
            l.layer,
            format!("{:?}", l.kind).to_lowercase(),
            l.mode,
            l.rel_error,
            l.stable_rank,
            l.singular_values.first().copied().unwrap_or(0.0),
            l.u_tokens.first().map(|t| words(t)).unwrap_or_default(),
            words(&l.logit_lens_tokens)
        );
    }
    if !r.path.is_empty() {
        println!("path of u₁, u₂ (cumulative, on the output's):");
        for p in &r.path {
            println!(
                "  layer {:>3}  ({:>7.4}, {:>7.4})  {:?}",
                p.layer, p.x, p.y, p.label
            );
        }
    }
    if let Some(s) = &r.steering {
        println!(
            "steering with {:?} at layer {}, λ = {}:",
            s.source, s.layer, s.lambda
        );
        println!("  steered:   {:?}", s.steered);
        println!("  unsteered: {:?}", s.unsteered);
        println!(
            "  p({:?}) at the first generated position: {:.3e} steered, {:.3e} unsteered",
            s.source_token, s.source_token_prob_steered, s.source_token_prob_unsteered
        );
    }
    let t = &r.timings_ms;
    println!(
        "timings (ms): forward {:.0}, shares {:.0}, contributions {:.0}, jacobian {:.0}, svd {:.0}, decode {:.0}, layers {:.0}, steering {:.0}, ordinary {:.0}",
        t.forward, t.shares, t.contributions, t.jacobian, t.svd, t.decode, t.layers, t.steering, t.ordinary
    );
}

fn join(values: &[f64], count: usize) -> String {
    values
        .iter()
        .take(count)
        .map(|v| format!("{v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn words(tokens: &[lens_engine::analysis::decode::TokenScore]) -> String {
    tokens
        .iter()
        .map(|t| format!("{:?}", t.token))
        .collect::<Vec<_>>()
        .join(" ")
}
