//! Test support: a stand-in for the Kubernetes API on 127.0.0.1 that records requests.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain-HTTP server answering every request with `status` and a Job (200) or a Kubernetes
/// `Status` (otherwise). Requests are sent to the returned channel. The server thread ends with
/// the test process.
pub fn kube_stand_in(status: u16) -> (SocketAddr, mpsc::Receiver<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let target = parts.next().unwrap_or_default().to_string();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target.clone(), String::new()),
            };
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let rec = Recorded {
                method,
                path: path.clone(),
                query,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let segments: Vec<&str> = path.split('/').collect();
            let (ns, name) = (
                segments.get(5).copied().unwrap_or(""),
                segments.get(7).copied().unwrap_or(""),
            );
            let answer = if status == 200 {
                let patch: serde_json::Value =
                    serde_json::from_str(&rec.body).unwrap_or_default();
                serde_json::json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": name, "namespace": ns,
                                 "annotations": patch["metadata"]["annotations"]},
                })
            } else {
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("jobs.batch \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:arcane\" cannot patch resource \"jobs\" in API group \"batch\" in the namespace \"{ns}\""),
                    "reason": "Forbidden", "details": {"name": name, "group": "batch", "kind": "jobs"},
                    "code": status,
                })
            }
            .to_string();
            let _ = tx.send(rec);
            let reason = if status == 200 { "OK" } else { "Forbidden" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.flush();
        }
    });
    (addr, rx)
}
