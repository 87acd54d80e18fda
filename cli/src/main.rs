//! `insitu`: the command line of insitu. Thin wiring over the library crates: parse
//! arguments and configuration, call the library, print results and errors that say
//! what to do next.

mod admin;
mod args;
mod commands;
mod output;
mod serve_config;

use clap::Parser;

use crate::args::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Demo(a) => commands::demo::run(a).await,
        Command::Keys(a) => commands::keys::run(a).await,
        Command::Dev(a) => commands::dev::run(a).await,
        Command::Serve(a) => commands::serve::run(a).await,
        Command::Publish(a) => commands::publish::run(a).await,
        Command::Update(a) => commands::update::run(a).await,
        Command::Search(a) => commands::search::run(a).await,
        Command::Order(a) => commands::order::run(a).await,
        Command::Token(a) => commands::token::run(a).await,
        Command::Get(a) => commands::get::run(a).await,
        Command::Query(a) => commands::query::run(a).await,
        Command::Compute(a) => commands::compute::run(a).await,
        Command::Train(a) => commands::train::run(a).await,
        Command::Constraints(a) => commands::constraints::run(a).await,
        Command::Init(a) => commands::init::run(a),
        Command::Status(a) => commands::status::run(a).await,
        Command::Refund(a) => commands::refund::run(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8, server: bool) {
    let default = match (verbose, server) {
        (0, false) => "warn",
        (0, true) => "info",
        (1, _) => "info,insitu=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("INSITU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("INSITU_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
