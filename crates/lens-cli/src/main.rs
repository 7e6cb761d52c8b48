//! `linear-lens`: the engine on the command line.

mod models;
mod serve;

use clap::{Parser, Subcommand};
use lens_engine::{forward::Precision, Model};
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

fn load(spec: &str) -> Result<Model, String> {
    let path = models::resolve(spec)?;
    Model::load_path(&path).map_err(|e| e.to_string())
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
        Command::Serve { port, dist, models } => serve::run(port, &dist, models),
    }
}
