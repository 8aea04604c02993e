//! `millrace-s3-server ROOT --host H --port P [--access-key K --secret-key S]`: the
//! file-system S3 server of the s3s project (`s3s-fs`, Apache-2.0), serving the objects
//! under ROOT. The Firehose, channel and function suites deliver into it and read back what
//! was delivered with boto3's S3 client.
//!
//! This is s3s-fs's own `main.rs` (0.14.1) reduced to what the suites use; it lives in the
//! workspace so that it is built with the workspace's dependencies (see Cargo.toml).

use std::path::PathBuf;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s_fs::FileSystem;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(version)]
struct Opt {
    /// Host name to listen on.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Port number to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value = "8014")]
    port: u16,
    /// Access key used for authentication (with --secret-key).
    #[arg(long, requires = "secret_key")]
    access_key: Option<String>,
    /// Secret key used for authentication (with --access-key).
    #[arg(long, requires = "access_key")]
    secret_key: Option<String>,
    /// Root directory of stored data.
    root: PathBuf,
}

#[tokio::main]
async fn main() -> s3s_fs::Result {
    let opt = Opt::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .init();

    let fs = FileSystem::new(&opt.root)?;
    let service = {
        let mut builder = S3ServiceBuilder::new(fs);
        if let (Some(access_key), Some(secret_key)) = (opt.access_key, opt.secret_key) {
            builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        }
        builder.build()
    };

    let listener = TcpListener::bind((opt.host.as_str(), opt.port)).await?;
    let local_addr = listener.local_addr()?;
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    tracing::info!("server is running at http://{local_addr}");
    println!("server is running at http://{local_addr}");

    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    tracing::error!("error accepting connection: {error}");
                    continue;
                }
            },
            _ = ctrl_c.as_mut() => break,
        };
        let connection = http.serve_connection(TokioIo::new(socket), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {},
    }
    Ok(())
}
