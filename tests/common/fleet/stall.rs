//! A TCP proxy that can make its target slow: while a stall is set, every chunk a client sends is
//! held that long before it is forwarded (answers come back as they are). A table that answers
//! late, not one that is gone: the calls still land, after the caller may have given up on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::proxy::listen;

pub struct StallProxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    stall_ms: Arc<AtomicU64>,
}

impl StallProxy {
    /// Forwards a random local port to `target` (`http://host:port`), without delay.
    pub async fn start(target: &str) -> StallProxy {
        let (listener, url, target) = listen(target).await;
        let stall_ms = Arc::new(AtomicU64::new(0));
        let stall = stall_ms.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, stall) = (target.clone(), stall.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let ms = stall.load(Ordering::SeqCst);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                    }
                });
            }
        });
        StallProxy { url, stall_ms }
    }

    /// Holds every chunk sent from now on for `stall` (zero: none).
    pub fn set_stall(&self, stall: Duration) {
        self.stall_ms
            .store(stall.as_millis() as u64, Ordering::SeqCst);
    }
}
