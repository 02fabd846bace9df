//! The memory-heavy kinds of abuse, against a running dflockd server, for measuring its
//! resident memory from outside (`/proc/PID/status`): the key table filled from many
//! connections, then `CONNECTIONS` connections that each ask for one large reply (`stats` on
//! the full table) and stay open, then clients that pipeline `stats` without reading replies.
//! Then every connection closes, so what the server keeps afterwards is its steady memory.
//!
//! ```sh
//! lockcheck serve --port 6388 &
//! cargo run --release -p lockcheck-impls --features dflockd --example serve_memory_load -- 127.0.0.1:6388
//! grep -E 'VmHWM|VmRSS' /proc/$(pgrep -f 'lockcheck serve')/status
//! ```
//!
//! Prints one line per phase; exits non-zero only if the server cannot be reached.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const FILLERS: usize = 64;
const KEYS_PER_FILLER: usize = 64;
const CONNECTIONS: usize = 1000;
const PIPELINERS: usize = 10;

async fn connect(address: &str) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

async fn request(c: &mut BufReader<TcpStream>, cmd: &str, key: &str, arg: &str) -> std::io::Result<String> {
    c.get_mut().write_all(format!("{cmd}\n{key}\n{arg}\n").as_bytes()).await?;
    let mut line = String::new();
    c.read_line(&mut line).await?;
    Ok(line)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6388".to_owned());

    let mut fillers = Vec::new();
    let mut held = 0;
    for f in 0..FILLERS {
        let mut c = connect(&address).await?;
        for k in 0..KEYS_PER_FILLER {
            // A long key, so that the table's `stats` document is large.
            let key = format!("fill-{f:04}-{k:04}-{}", "x".repeat(150));
            if request(&mut c, "l", &key, "0 600").await?.starts_with("ok ") {
                held += 1;
            }
        }
        fillers.push(c);
    }
    println!("table filled: {held} keys held by {FILLERS} connections");

    let mut readers = Vec::new();
    let mut reply_bytes = 0;
    for _ in 0..CONNECTIONS {
        let Ok(mut c) = connect(&address).await else { break };
        let Ok(reply) = request(&mut c, "stats", "_", "_").await else { break };
        reply_bytes += reply.len();
        readers.push(c);
    }
    println!(
        "{} connections each read one stats reply ({} KiB each on average)",
        readers.len(),
        reply_bytes / readers.len().max(1) / 1024
    );

    let requests = b"stats\n_\n_\n".repeat(50_000);
    let mut pipeliners = Vec::new();
    for _ in 0..PIPELINERS {
        let mut stream = TcpStream::connect(&address).await?;
        // Whatever the kernel takes within a second; the replies are never read.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&requests)).await;
        pipeliners.push(stream);
    }
    println!("{PIPELINERS} connections pipelined stats without reading");
    tokio::time::sleep(Duration::from_secs(3)).await;

    drop(pipeliners);
    drop(readers);
    drop(fillers);
    // One last exchange, so the server has seen every close before this process ends.
    let mut last = connect(&address).await?;
    request(&mut last, "ping", "_", "_").await?;
    println!("every connection closed");
    Ok(())
}
