//! The `weir` command line: `run`, `check`, and the plugin tooling
//! (`plugin new`, `plugin build`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::server::{Options, Server};
use crate::telemetry::{LogFormat, init_logging};

/// Weir: a lean HTTP reverse proxy whose resilience policies are WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "weir.toml")]
        config: PathBuf,
        /// How to write logs.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// Do not reload the config when its file changes.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config file and every plugin it names; exits non-zero with
    /// file:line:column of each error.
    Check {
        /// The config file.
        #[arg(short, long, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Plugin tooling.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Scaffold a plugin crate that builds to a loadable `.wasm`.
    New {
        /// The plugin's name (its `.wasm` file's stem).
        name: String,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Weir SDK's source directory (`sdk/` of a Weir checkout).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build the plugin crate in the current directory to `.wasm`, and
    /// optionally install it into a plugins directory.
    Build {
        /// Install the `.wasm` into this plugins directory (write, then rename).
        #[arg(long)]
        install: Option<PathBuf>,
        /// The installed file's name, without `.wasm` (the name routes use);
        /// default: the crate's package name.
        #[arg(long)]
        name: Option<String>,
        /// The crate's directory.
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Plugin(PluginCommand::New {
            name,
            dir,
            sdk_path,
        }) => {
            let sdk = sdk_path.unwrap_or_else(crate::scaffold::default_sdk_path);
            match crate::scaffold::new_plugin(&name, &dir, &sdk) {
                Ok(root) => {
                    println!(
                        "created {}; test, build and install it with:",
                        root.display()
                    );
                    println!("  cd {}", root.display());
                    println!("  cargo test");
                    println!("  weir plugin build --install /path/to/plugins");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin(PluginCommand::Build {
            install,
            name,
            path,
        }) => {
            let request = crate::plugin_build::BuildRequest {
                crate_dir: path,
                install,
                name,
            };
            match crate::plugin_build::build(&request) {
                Ok(built) => {
                    let size = std::fs::metadata(&built.wasm).map_or(0, |m| m.len());
                    println!(
                        "built {} ({} KiB)",
                        built.wasm.display(),
                        size.div_ceil(1024)
                    );
                    if let Some(installed) = built.installed {
                        println!("installed {}", installed.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            log_format,
            no_watch,
        } => {
            init_logging(log_format);
            match run(&config, !no_watch) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("weir: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let checked =
        Config::load(path).and_then(|config| match crate::server::check_plugins(&config) {
            Ok(warnings) => {
                for warning in warnings {
                    eprintln!("warning: {warning}");
                }
                Ok(config)
            }
            Err(crate::server::StartError::Plugins(error)) => Err(error),
            Err(other) => Err(ConfigError::Invalid(vec![crate::config::Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: other.to_string(),
            }])),
        });
    match checked {
        Ok(config) => {
            let plugins: std::collections::BTreeSet<&str> = config
                .routes
                .iter()
                .flat_map(|r| r.plugins.iter().map(|p| p.name.as_str()))
                .collect();
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes, {} plugins)",
                path.display(),
                config.listeners.len(),
                config.upstreams.len(),
                config.routes.len(),
                plugins.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

fn report(error: &ConfigError) {
    match error {
        ConfigError::Invalid(list) => {
            for diagnostic in list {
                eprintln!("error: {diagnostic}");
            }
            eprintln!("{} error(s); config refused", list.len());
        }
        ConfigError::Read { .. } => eprintln!("error: {error}"),
    }
}

fn run(path: &std::path::Path, watch_config: bool) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            anyhow::bail!("invalid config {}", path.display());
        }
    };
    let server = match Server::start(config, Options { watch_config }) {
        Ok(server) => server,
        Err(crate::server::StartError::Plugins(error)) => {
            report(&error);
            anyhow::bail!("invalid config {}: plugins", path.display());
        }
        Err(other) => return Err(other).context("cannot start"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    runtime.block_on(async {
        wait_for_signal().await?;
        tracing::info!("shutting down");
        let drained = server.shutdown().await;
        tracing::info!(drained, "stopped");
        anyhow::Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
