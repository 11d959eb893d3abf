//! A TCP proxy a test can cut: stands between a sluice process (or client) and an emulator, and on
//! [`Proxy::cut`] drops every open connection and swallows new ones without answering — a network
//! partition as the client sees it (calls hang until their timeouts). [`Proxy::heal`] lets traffic
//! through again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The plumbing every proxy here starts with: a listener on a random local port, its URL
/// (`http://127.0.0.1:<port>`), and `target` (`http://host:port`) as the `host:port` to connect to.
pub async fn listen(target: &str) -> (TcpListener, String, String) {
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url, target)
}

pub struct Proxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    cut: Arc<AtomicBool>,
    /// Cancelled at a cut: every forwarding task stops.
    links: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Proxy {
    /// Forwards a random local port to `target` (`http://host:port`).
    pub async fn start(target: &str) -> Proxy {
        let (listener, url, target) = listen(target).await;
        let cut = Arc::new(AtomicBool::new(false));
        let links = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            let mut swallowed = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    swallowed.push(inbound); // held open, never answered
                    continue;
                }
                let stop = l.lock().unwrap().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy { url, cut, links }
    }

    /// Partitions: open connections are dropped, new ones hang.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut links = self.links.lock().unwrap();
        links.cancel();
        *links = CancellationToken::new();
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
