//! `rpcctl`: a command-line caller for servers of this framework and its registry.
//!
//! - `ls` lists a server's services through its reflection service (`rpc.Reflection`);
//! - `call` calls any method with JSON arguments and prints the JSON answer (items of a stream
//!   as JSON lines), at an endpoint or at an instance found in a registry;
//! - `ping` measures a connection's set-up and a heartbeat round trip;
//! - `registry ls` and `registry watch` read a registry server's instances;
//! - `completions` prints a shell completion script.

mod call;
mod connect;
mod fail;
mod list;
mod output;
mod ping;
mod registry;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::fail::Failure;

const AFTER_HELP: &str = "\
Endpoints: tcp://host:port, tls://host:port, ws://host:port/path, wss://host:port/path,
quic://host:port, unix:///path; host:port alone means tcp://host:port. tls:// and wss:// trust
the Mozilla roots, or --tls-ca.

Exit status: 0 on success; 1 when the call, the connection or the server failed (an error
status, an application error, an unknown service or method, an unreachable endpoint); 2 when
the command line itself is wrong (an endpoint that does not parse, JSON that does not parse,
a bad flag). Errors are one line on standard error.";

/// Lists, calls and pings servers of the framework, and reads its registry.
#[derive(Parser, Debug)]
#[command(name = "rpcctl", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: connect::TlsArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists a server's services, their methods, kinds and signatures (needs the server's
    /// reflection service, on by default).
    Ls(list::LsArgs),
    /// Calls a method with JSON arguments and prints its JSON answer.
    Call(call::CallArgs),
    /// Connects and measures heartbeat round trips (Ping and Pong frames).
    Ping(ping::PingArgs),
    /// Reads a registry server (the `rpc.Registry` service of registry-server).
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Prints a completion script for a shell, e.g. `rpcctl completions bash > rpcctl.bash`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        // Into memory first: the generator panics on a write error (a closed pipe), `line`
        // reports it.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "rpcctl", &mut script);
        let script = String::from_utf8_lossy(&script);
        return match output::line(script.trim_end()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => report(&failure),
        };
    }
    if let Err(failure) = cli.tls.install() {
        return report(&failure);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(&Failure::failed(format!("cannot start the runtime: {e}"))),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Ls(args) => list::run(args).await,
            Command::Call(args) => call::run(args).await,
            Command::Ping(args) => ping::run(args).await,
            Command::Registry(command) => registry::run(command).await,
            Command::Completions { .. } => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> ExitCode {
    if !failure.is_quiet() {
        eprintln!("rpcctl: {failure}");
    }
    failure.exit_code()
}
