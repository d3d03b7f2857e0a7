//! `nimbus`: the one binary. `up` runs a node; the other commands are clients of a node's API.
//! This crate is glue: argument parsing, configuration and wiring. The components live in the
//! library crates.

#![forbid(unsafe_code)]

mod client;
mod stack;
mod worker;

use nimbus::{config, node};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ENV_CONFIG, ENV_DATA_DIR, ENV_LISTEN, NodeConfig};

#[derive(Debug, Parser)]
#[command(
    name = "nimbus",
    version,
    about = "A serverless platform you run yourself"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an all-in-one node in the foreground (frontend, worker manager, placement, a worker).
    Up {
        /// Address to serve the API on [default: 127.0.0.1:9000].
        #[arg(long, env = ENV_LISTEN)]
        listen: Option<std::net::SocketAddr>,
        /// Directory of the embedded store and code [default: ./nimbus-data].
        #[arg(long, env = ENV_DATA_DIR)]
        data_dir: Option<PathBuf>,
        /// TOML configuration file (see nimbus.example.toml).
        #[arg(long, env = ENV_CONFIG)]
        config: Option<PathBuf>,
        /// Run without the built-in worker: only workers that join host sandboxes.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run a worker that joins a node and hosts sandboxes for it.
    Worker(worker::WorkerArgs),
    /// Show the node's workers, their capacity and their sandboxes.
    Status(client::StatusArgs),
    /// Deploy the application in template.yaml (AWS SAM, CloudFormation) or serverless.yml as
    /// a stack; with a function name, create or update that one function.
    Deploy(client::DeployArgs),
    /// Show a deployed application's stack: status, outputs, endpoints.
    Info(stack::InfoArgs),
    /// Delete everything an application's stack made.
    Remove(stack::RemoveArgs),
    /// List the stacks.
    Stacks(stack::StacksArgs),
    /// Invoke a function synchronously and print its result.
    Invoke(client::InvokeArgs),
    /// Print a function's invocation logs.
    Logs(client::LogsArgs),
    /// Print invocations, GB-seconds and cost per function.
    Usage(client::UsageArgs),
    /// Show a function's asynchronous events: queued, in flight, dead-lettered; replay one.
    Events(client::EventsArgs),
    /// List queues with how many messages wait, are in flight or are delayed.
    Queues(client::QueuesArgs),
    /// Print (or write to ~/.aws) an aws CLI profile for the node, with its endpoint and key.
    Credentials(client::CredentialsArgs),
    /// Create and list accounts (the node's operator).
    Accounts(client::AccountsArgs),
}

pub(crate) fn init_tracing() {
    // The S3 protocol library reports every refused request (a missing key, a bad signature)
    // as an error; nimbus logs what matters of those itself.
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_node(
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    no_worker: bool,
) -> anyhow::Result<()> {
    let mut node_config = match config {
        Some(path) => NodeConfig::load(&path)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = listen {
        node_config.listen = listen;
    }
    if let Some(dir) = data_dir {
        node_config.data_dir = dir;
    }
    if no_worker {
        node_config.worker.disabled = true;
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nimbus")
        .build()?;
    runtime.block_on(node::run(node_config))
}

fn main() -> ExitCode {
    // The sandbox helper is this same executable; it must start before anything else runs.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == nimbus_sandbox::HELPER_ARG)
    {
        nimbus_sandbox::helper_main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            listen,
            data_dir,
            config,
            no_worker,
        } => run_node(listen, data_dir, config, no_worker).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => client::status(args),
        Command::Deploy(args) => client::deploy(args),
        Command::Info(args) => stack::info(args),
        Command::Remove(args) => stack::remove(args),
        Command::Stacks(args) => stack::stacks(args),
        Command::Invoke(args) => client::invoke(args),
        Command::Logs(args) => client::logs(args),
        Command::Usage(args) => client::usage(args),
        Command::Events(args) => client::events(args),
        Command::Queues(args) => client::queues(args),
        Command::Credentials(args) => client::credentials_profile(args),
        Command::Accounts(args) => client::accounts(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
