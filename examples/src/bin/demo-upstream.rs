//! A small demo service to put behind Weir (see `weir_examples::demo`).
//!
//! Run with: `cargo run -p weir-examples --bin demo-upstream -- --listen 127.0.0.1:3001 --name demo-1`

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;

/// A demo service for Weir's examples.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Name to answer with.
    #[arg(long, default_value = "demo")]
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "demo-upstream {} listening on http://{}",
        args.name, args.listen
    );
    weir_examples::demo::serve(listener, &args.name).await;
    Ok(())
}
