//! A stand-in for the Hugging Face hub on loopback, speaking the part of its HTTP protocol
//! that downloads use: the repo listing (`/api/datasets/REPO/revision/main?blobs=true`) and
//! ranged file reads (`/datasets/REPO/resolve/main/FILE` with `x-repo-commit`, `etag` and
//! `Content-Range`), so the real `hf-hub` client runs against it offline. It records every
//! request's path and `Range` header.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct HubFile {
    pub path: String,
    pub bytes: Vec<u8>,
    /// The size the listing gives (normally `bytes.len()`).
    pub listed_size: u64,
}

impl HubFile {
    pub fn new(path: &str, bytes: Vec<u8>) -> Self {
        HubFile {
            path: path.into(),
            listed_size: bytes.len() as u64,
            bytes,
        }
    }
}

/// Each request's path and `Range` header, in order.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The etag of the `index`-th file: its blob's name in the cache.
pub fn etag(index: usize) -> String {
    format!("fixture-etag-{index}")
}

pub struct FakeHub {
    pub url: String,
    requests: Arc<RequestLog>,
}

impl FakeHub {
    /// Serves `files` of dataset `repo` until the test ends.
    pub fn start(repo: &str, files: Vec<HubFile>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, repo) = (requests.clone(), repo.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &repo, &files, &log);
            }
        });
        FakeHub { url, requests }
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The `Range` headers of the file reads of `path` (metadata probes `bytes=0-0` included).
    pub fn ranges(&self, path: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(&format!("/resolve/main/{path}")))
            .filter_map(|(_, r)| r.clone())
            .collect()
    }
}

fn serve(stream: TcpStream, repo: &str, files: &[HubFile], log: &RequestLog) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let target = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = target.split('?').next().unwrap().to_string();
    log.lock().unwrap().push((path.clone(), range.clone()));
    let (status, headers, body) = respond(&path, range.as_deref(), repo, files);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&body);
}

fn respond(
    path: &str,
    range: Option<&str>,
    repo: &str,
    files: &[HubFile],
) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    if path == format!("/api/datasets/{repo}/revision/main") {
        let mut siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| serde_json::json!({"rfilename": f.path, "size": f.listed_size}))
            .collect();
        siblings.push(serde_json::json!({"rfilename": "README.md", "size": 10}));
        let body = serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings});
        let headers = vec![("Content-Type".into(), "application/json".into())];
        return ("200 OK", headers, body.to_string().into_bytes());
    }
    let prefix = format!("/datasets/{repo}/resolve/main/");
    let found = path
        .strip_prefix(&prefix)
        .and_then(|name| files.iter().enumerate().find(|(_, f)| f.path == name));
    let Some((index, file)) = found else {
        return ("404 Not Found", vec![], b"not found".to_vec());
    };
    let len = file.bytes.len();
    let (start, end) = parse_range(range, len);
    if start >= len {
        let headers = vec![("Content-Range".into(), format!("bytes */{len}"))];
        return ("416 Range Not Satisfiable", headers, Vec::new());
    }
    let headers = vec![
        ("x-repo-commit".into(), COMMIT.into()),
        ("etag".into(), format!("\"{}\"", etag(index))),
        ("Content-Range".into(), format!("bytes {start}-{end}/{len}")),
    ];
    (
        "206 Partial Content",
        headers,
        file.bytes[start..=end].to_vec(),
    )
}

/// `bytes=A-` or `bytes=A-B`; the end is clamped to the file (a start past it is a 416).
fn parse_range(range: Option<&str>, len: usize) -> (usize, usize) {
    let spec = range.and_then(|r| r.strip_prefix("bytes=")).unwrap_or("0-");
    let (a, b) = spec.split_once('-').unwrap_or(("0", ""));
    let start = a.parse().unwrap_or(0);
    let end = b.parse().unwrap_or(len - 1).min(len - 1);
    (start, end)
}
