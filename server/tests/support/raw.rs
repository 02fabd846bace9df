//! A raw dflockd client for protocol tests: bytes in, lines out, nothing validated, so
//! tests can send what no well-behaved client would.

#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bounds every read so a server bug fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(10);

pub struct Raw {
    stream: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw { stream: BufReader::new(stream) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    /// Sends bytes, ignoring a reset (the server may already have closed).
    pub async fn send_lossy(&mut self, bytes: &[u8]) -> bool {
        self.stream.get_mut().write_all(bytes).await.is_ok()
    }

    /// The next reply line, or `None` at end of stream.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(GUARD, self.stream.read_line(&mut line))
            .await
            .expect("the server answered within the guard")
            .unwrap_or(0);
        (n > 0).then(|| line.trim_end_matches('\n').to_owned())
    }

    pub async fn req(&mut self, cmd: &str, key: &str, arg: &str) -> String {
        self.send(format!("{cmd}\n{key}\n{arg}\n").as_bytes()).await;
        self.line().await.expect("a reply, not a close")
    }

    /// Whether the server closed the connection (reads end of stream).
    pub async fn closed(&mut self) -> bool {
        self.line().await.is_none()
    }

    /// `ok <token> <lease>` → token.
    pub async fn grant(&mut self, cmd: &str, key: &str, arg: &str) -> String {
        let reply = self.req(cmd, key, arg).await;
        let fields: Vec<&str> = reply.split(' ').collect();
        assert_eq!(fields.len(), 3, "expected a grant for {cmd} {key} {arg}, got {reply:?}");
        assert!(fields[0] == "ok" || fields[0] == "acquired", "{reply:?}");
        fields[1].to_owned()
    }
}

pub fn fence_of(token: &str) -> u64 {
    assert_eq!(token.len(), 32, "{token}");
    u64::from_str_radix(&token[..16], 16).unwrap()
}
