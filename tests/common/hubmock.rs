//! A minimal Hugging Face Hub on 127.0.0.1, speaking the endpoints hf-hub calls to download a
//! file: `HEAD` and `GET {endpoint}/datasets/{repo}/resolve/{revision}/{path}` (ETag,
//! X-Repo-Commit and Content-Length headers, as the real Hub sends them).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

pub struct HubMock {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl HubMock {
    /// Serves `files`: URL path (`/datasets/o/n/resolve/rev/file`) -> content.
    pub fn start(files: HashMap<String, Vec<u8>>, commit: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, commit) = (requests.clone(), commit.to_owned());
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (log, files, commit) = (log.clone(), files.clone(), commit.clone());
                std::thread::spawn(move || serve(stream, &files, &commit, &log));
            }
        });
        Self { url, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, files: &HashMap<String, Vec<u8>>, commit: &str, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let mut body = vec![0; n];
            let _ = reader.read_exact(&mut body);
        }
        log.lock().unwrap().push(Request { method: method.clone(), path: path.clone(), headers });
        let response = match files.get(path.split('?').next().unwrap_or("")) {
            Some(body) => {
                let etag = blake3::hash(body).to_hex().to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {commit}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                );
                let mut r = head.into_bytes();
                if method != "HEAD" {
                    r.extend_from_slice(body);
                }
                r
            }
            None => {
                let body = b"{\"error\":\"Entry not found\"}";
                let mut r = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nX-Error-Code: EntryNotFound\r\nContent-Type: application/json\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if method != "HEAD" {
                    r.extend_from_slice(body);
                }
                r
            }
        };
        if stream.write_all(&response).is_err() {
            return;
        }
    }
}
