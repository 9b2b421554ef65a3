//! Baseline: a single-threaded Tokio echo server, no framework.
//! Usage: echo-tokio PORT [ADDRESS]. The idiomatic shape: a current_thread
//! runtime, one task per connection that reads up to 16 KiB and write_all()s
//! it back, TCP_NODELAY, and "listening on ADDR:PORT" on stderr when ready,
//! as perf/baselines/echo_epoll.cpp and echo_uring.cpp do.
use std::net::{IpAddr, SocketAddr};
use std::process::exit;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Same buffer size as the C++ baselines, so a 16 KiB message is one read.
const BUFFER_SIZE: usize = 16 * 1024;

fn die(what: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("echo-tokio: {what}: {err}");
    exit(1);
}

/// Echoes every byte until EOF or an error (a reset just ends this connection).
async fn echo(mut stream: TcpStream) {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("echo-tokio: TCP_NODELAY: {e}");
                }
                tokio::spawn(echo(stream));
            }
            // EMFILE and friends: say so and keep serving the others.
            Err(e) => eprintln!("echo-tokio: accept: {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: echo-tokio PORT [ADDRESS]");
        exit(2);
    }
    let port: u16 = args[1].parse().unwrap_or_else(|e| die("port", e));
    let host = args.get(2).map(String::as_str).unwrap_or("127.0.0.1");
    let ip: IpAddr = host.parse().unwrap_or_else(|e| die("address", e));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| die("runtime", e));
    // On a current_thread runtime, block_on also drives every spawned
    // connection task: the whole server runs on this one thread.
    runtime.block_on(async {
        // Tokio's bind sets SO_REUSEADDR and a 1024 backlog, like the baselines.
        let listener = TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .unwrap_or_else(|e| die("bind", e));
        eprintln!("listening on {host}:{port}");
        serve(listener).await;
    });
}
