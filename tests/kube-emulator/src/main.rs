//! `kube-emulator --listen 127.0.0.1:0 --write-kubeconfig PATH`: prints `listening on URL` first
//! (plain HTTP), then `serving HTTPS on URL`, writes a kubeconfig (HTTPS, its CA, the admin token),
//! serves until SIGTERM or SIGINT.

use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kube-emulator",
    about = "A Kubernetes API server emulator for tests"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Address of the HTTPS listener (the one the kubeconfig names).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen_tls: std::net::SocketAddr,
    /// Where to write a kubeconfig pointing at the emulator.
    #[arg(long)]
    write_kubeconfig: Option<std::path::PathBuf>,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut emu = kube_emulator::Emulator::start(kube_emulator::Options {
        listen: args.listen,
        listen_tls: args.listen_tls,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
    })
    .await?;
    if let Some(p) = &args.write_kubeconfig {
        emu.write_kubeconfig(p)?;
    }
    // Both lines in one write: a reader that takes the first line and closes the pipe must not
    // make a later write fail.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(
        format!(
            "listening on {}\nserving HTTPS on {}\n",
            emu.url(),
            emu.https_url()
        )
        .as_bytes(),
    )?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    emu.stop();
    Ok(())
}
