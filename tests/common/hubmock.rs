//! A Hugging Face Hub on 127.0.0.1 for the tests, speaking the endpoints `hf-hub` 1.x calls:
//!
//! - downloads: `HEAD`/`GET {endpoint}/[datasets/]{repo}/resolve/{revision}/{path}` (ETag,
//!   X-Repo-Commit and Content-Length headers, as the real Hub sends them);
//! - repositories: `GET /api/models/{repo}[/revision/{rev}]`, `POST /api/repos/create`,
//!   `POST /api/models/{repo}/branch/{branch}`;
//! - uploads: `POST /api/models/{repo}/preupload/{rev}` (binary files -> "lfs"), the git-LFS
//!   batch API `POST /{repo}.git/info/lfs/objects/batch` (answers "basic", as a plain LFS
//!   server does, with upload actions to `PUT /lfs/{oid}`), and the NDJSON commit
//!   `POST /api/models/{repo}/commit/{rev}` (header, file, lfsFile, deletedFile lines). A commit
//!   is applied whole or not at all.
//!
//! Every request is recorded (method, path, headers, body). Failures can be injected per
//! endpoint, and a token can be required for every request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// One commit the mock accepted: its repository, branch, sha and the NDJSON lines' keys and
/// paths (`("lfsFile", "models/simple/model.safetensors")`, ...).
#[derive(Debug, Clone)]
pub struct Commit {
    pub repo: String,
    pub branch: String,
    pub sha: String,
    pub summary: String,
    pub operations: Vec<(String, String)>,
}

#[derive(Default)]
struct Repo {
    private: bool,
    branches: HashMap<String, String>,
    trees: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Repo {
    fn sha_of(&self, rev: &str) -> Option<String> {
        self.branches.get(rev).cloned().or_else(|| self.trees.contains_key(rev).then(|| rev.to_owned()))
    }
}

#[derive(Default)]
struct State {
    /// "models/o/n" or "datasets/o/n" -> repository.
    repos: HashMap<String, Repo>,
    /// Exact URL path -> content (fixed files, e.g. a dataset at a pinned revision).
    fixed: HashMap<String, Vec<u8>>,
    fixed_commit: String,
    lfs: HashMap<String, Vec<u8>>,
    /// Oids offered in LFS batch requests.
    lfs_offered: Vec<(String, u64)>,
    requests: Vec<Request>,
    commits: Vec<Commit>,
    /// (method, path fragment, status): the next matching requests get this status.
    failures: VecDeque<(String, String, u16)>,
    required_token: Option<String>,
}

pub struct HubMock {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl HubMock {
    /// An empty Hub.
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (s, u) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (s, u) = (s.clone(), u.clone());
                std::thread::spawn(move || serve(stream, &s, &u));
            }
        });
        Self { url, state }
    }

    /// Serves `files`: URL path (`/datasets/o/n/resolve/rev/file`) -> content, at commit `commit`.
    pub fn start(files: HashMap<String, Vec<u8>>, commit: &str) -> Self {
        let mock = Self::new();
        {
            let mut s = mock.state.lock().unwrap();
            s.fixed = files;
            s.fixed_commit = commit.to_owned();
        }
        mock
    }

    /// Every request must carry `Authorization: Bearer {token}`; others get 401.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().required_token = Some(token.to_owned());
    }

    /// The next `times` requests whose method is `method` and whose path contains `fragment`
    /// are answered with `status`; status 0 closes the connection without an answer (a reset).
    pub fn fail(&self, method: &str, fragment: &str, status: u16, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.failures.push_back((method.to_owned(), fragment.to_owned(), status));
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn commits(&self) -> Vec<Commit> {
        self.state.lock().unwrap().commits.clone()
    }

    pub fn lfs_offered(&self) -> Vec<(String, u64)> {
        self.state.lock().unwrap().lfs_offered.clone()
    }

    /// The files of model repository `repo` at branch `branch`.
    pub fn tree(&self, repo: &str, branch: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.state.lock().unwrap();
        let r = s.repos.get(&format!("models/{repo}"))?;
        r.trees.get(r.branches.get(branch)?).cloned()
    }

    /// Changes one file of `repo` at `branch` behind the client's back (a new commit).
    pub fn tamper(&self, repo: &str, branch: &str, path: &str, content: &[u8]) {
        let mut s = self.state.lock().unwrap();
        let r = s.repos.get_mut(&format!("models/{repo}")).unwrap();
        let mut tree = r.trees[&r.branches[branch]].clone();
        tree.insert(path.to_owned(), content.to_vec());
        let sha = commit_sha(&r.branches[branch], path);
        r.trees.insert(sha.clone(), tree);
        r.branches.insert(branch.to_owned(), sha);
    }

    pub fn is_private(&self, repo: &str) -> Option<bool> {
        self.state.lock().unwrap().repos.get(&format!("models/{repo}")).map(|r| r.private)
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn json_response(status: u16, value: Value) -> Response {
    Response { status, headers: vec![("Content-Type".into(), "application/json".into())], body: serde_json::to_vec(&value).unwrap() }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut r = json_response(status, json!({"error": message}));
    r.headers.push(("X-Error-Code".into(), code.into()));
    r.headers.push(("X-Error-Message".into(), message.into()));
    r
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
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
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; n];
        reader.read_exact(&mut body).ok()?;
    } else if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Request { method, path, headers, body })
}

fn serve(stream: TcpStream, state: &Mutex<State>, url: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    while let Some(req) = read_request(&mut reader) {
        let head_only = req.method == "HEAD";
        let response = {
            let mut s = state.lock().unwrap();
            s.requests.push(req.clone());
            handle(&mut s, &req, url)
        };
        if response.status == 0 {
            return; // dropped: the client sees the connection close mid-request
        }
        let mut out = format!("HTTP/1.1 {} {}\r\nContent-Length: {}\r\n", response.status, reason(response.status), response.body.len());
        for (k, v) in &response.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&response.body);
        }
        if stream.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_response(body: &[u8], commit: &str) -> Response {
    Response {
        status: 200,
        headers: vec![
            ("ETag".into(), format!("\"{}\"", blake3::hash(body).to_hex())),
            ("X-Repo-Commit".into(), commit.into()),
            ("Content-Type".into(), "application/octet-stream".into()),
        ],
        body: body.to_vec(),
    }
}

fn handle(s: &mut State, req: &Request, url: &str) -> Response {
    let path = req.path.split('?').next().unwrap_or("").to_owned();
    if let Some(i) = s.failures.iter().position(|(m, frag, _)| *m == req.method && path.contains(frag.as_str())) {
        let (_, _, status) = s.failures.remove(i).unwrap();
        if status == 0 {
            return Response { status: 0, headers: vec![], body: vec![] };
        }
        return error(status, "Injected", "injected failure");
    }
    let authorized = match &s.required_token {
        None => true,
        Some(t) => req.headers.get("authorization").is_some_and(|h| *h == format!("Bearer {t}")),
    };
    if !authorized {
        return error(401, "Unauthorized", "Invalid credentials in Authorization header");
    }
    if let Some(body) = s.fixed.get(&path) {
        return file_response(body, &s.fixed_commit);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["api", "repos", "create"]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let id = format!("{}/{}", body["organization"].as_str().unwrap_or("user"), body["name"].as_str().unwrap_or(""));
            let key = format!("{}s/{id}", body["type"].as_str().unwrap_or("model"));
            if s.repos.contains_key(&key) {
                return error(409, "Conflict", "You already created this model repo");
            }
            // A new repository has one commit with .gitattributes, as on the Hub.
            let mut repo = Repo { private: body["private"].as_bool().unwrap_or(false), ..Repo::default() };
            let tree: BTreeMap<String, Vec<u8>> =
                [(".gitattributes".to_owned(), b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n".to_vec())].into();
            let sha = commit_sha("", &format!("{tree:?}"));
            repo.trees.insert(sha.clone(), tree);
            repo.branches.insert("main".into(), sha);
            s.repos.insert(key, repo);
            json_response(200, json!({"url": format!("{url}/{id}")}))
        }
        ("GET", ["api", "models", o, n]) => match s.repos.get(&format!("models/{o}/{n}")) {
            Some(r) => json_response(200, json!({"id": format!("{o}/{n}"), "sha": r.branches.get("main"), "private": r.private})),
            None => error(404, "RepoNotFound", "Repository not found"),
        },
        ("GET", ["api", "models", o, n, "revision", rev]) => match s.repos.get(&format!("models/{o}/{n}")) {
            Some(r) => match r.sha_of(rev) {
                Some(sha) => json_response(200, json!({"id": format!("{o}/{n}"), "sha": sha, "private": r.private})),
                None => error(404, "RevisionNotFound", "Invalid rev id"),
            },
            None => error(404, "RepoNotFound", "Repository not found"),
        },
        ("POST", ["api", "models", o, n, "branch", branch]) => match s.repos.get_mut(&format!("models/{o}/{n}")) {
            Some(r) => {
                let main = r.branches["main"].clone();
                r.branches.insert((*branch).to_owned(), main);
                json_response(200, json!({}))
            }
            None => error(404, "RepoNotFound", "Repository not found"),
        },
        ("POST", ["api", "models", o, n, "preupload", _rev]) => {
            if !s.repos.contains_key(&format!("models/{o}/{n}")) {
                return error(404, "RepoNotFound", "Repository not found");
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let files: Vec<Value> = body["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| {
                    let p = f["path"].as_str().unwrap_or("");
                    let lfs = p.ends_with(".safetensors") || p.ends_with(".png");
                    json!({"path": p, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false})
                })
                .collect();
            json_response(200, json!({"files": files, "commitOid": null}))
        }
        ("POST", [o, n_git, "info", "lfs", "objects", "batch"]) => {
            let n = n_git.trim_end_matches(".git");
            if !s.repos.contains_key(&format!("models/{o}/{n}")) {
                return error(404, "RepoNotFound", "Repository not found");
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let mut objects = Vec::new();
            for obj in body["objects"].as_array().cloned().unwrap_or_default() {
                let (oid, size) = (obj["oid"].as_str().unwrap_or("").to_owned(), obj["size"].as_u64().unwrap_or(0));
                s.lfs_offered.push((oid.clone(), size));
                let mut o = json!({"oid": oid, "size": size, "authenticated": true});
                if !s.lfs.contains_key(&oid) {
                    o["actions"] = json!({"upload": {"href": format!("{url}/lfs/{oid}"), "expires_in": 3600}});
                }
                objects.push(o);
            }
            let mut r = json_response(200, json!({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}));
            r.headers[0].1 = "application/vnd.git-lfs+json".into();
            r
        }
        ("PUT", ["lfs", oid]) => {
            if sha256(&req.body) != *oid {
                return error(400, "BadOid", "content does not match the oid");
            }
            s.lfs.insert((*oid).to_owned(), req.body.clone());
            json_response(200, json!({}))
        }
        ("POST", ["api", "models", o, n, "commit", rev]) => commit(s, &format!("{o}/{n}"), rev, &req.body, url),
        ("GET" | "HEAD", [o, n, "resolve", rev, rest @ ..]) => resolve(s, &format!("models/{o}/{n}"), rev, &rest.join("/")),
        ("GET" | "HEAD", ["datasets", o, n, "resolve", rev, rest @ ..]) => resolve(s, &format!("datasets/{o}/{n}"), rev, &rest.join("/")),
        _ => error(404, "EntryNotFound", "Entry not found"),
    }
}

fn resolve(s: &State, key: &str, rev: &str, file: &str) -> Response {
    let Some(repo) = s.repos.get(key) else { return error(404, "RepoNotFound", "Repository not found") };
    let Some(sha) = repo.sha_of(rev) else { return error(404, "RevisionNotFound", "Invalid rev id") };
    match repo.trees[&sha].get(file) {
        Some(body) => file_response(body, &sha),
        None => error(404, "EntryNotFound", "Entry not found"),
    }
}

fn commit_sha(parent: &str, content: &str) -> String {
    blake3::hash(format!("{parent}\n{content}").as_bytes()).to_hex()[..40].to_owned()
}

fn commit(s: &mut State, repo_id: &str, rev: &str, body: &[u8], url: &str) -> Response {
    let key = format!("models/{repo_id}");
    let Some(repo) = s.repos.get(&key) else { return error(404, "RepoNotFound", "Repository not found") };
    let Some(parent) = repo.branches.get(rev).cloned() else { return error(404, "RevisionNotFound", "Invalid rev id") };
    let mut tree = repo.trees[&parent].clone();
    let mut summary = String::new();
    let mut operations = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else { return error(400, "BadRequest", "malformed NDJSON line") };
        let (k, val) = (v["key"].as_str().unwrap_or(""), &v["value"]);
        let p = val["path"].as_str().unwrap_or("").to_owned();
        match k {
            "header" => summary = val["summary"].as_str().unwrap_or("").to_owned(),
            "file" => {
                let Some(content) = base64_decode(val["content"].as_str().unwrap_or("")) else {
                    return error(400, "BadRequest", "bad base64");
                };
                tree.insert(p.clone(), content);
            }
            "lfsFile" => {
                let oid = val["oid"].as_str().unwrap_or("");
                let Some(content) = s.lfs.get(oid) else {
                    return error(422, "LfsMissing", &format!("LFS object {oid} of {p} was never uploaded"));
                };
                tree.insert(p.clone(), content.clone());
            }
            "deletedFile" => {
                tree.remove(&p);
            }
            other => return error(400, "BadRequest", &format!("unknown key {other}")),
        }
        if k != "header" {
            operations.push((k.to_owned(), p));
        }
    }
    let sha = commit_sha(&parent, &format!("{operations:?}{}", tree.values().map(|v| sha256(v)).collect::<String>()));
    let repo = s.repos.get_mut(&key).unwrap();
    repo.trees.insert(sha.clone(), tree);
    repo.branches.insert(rev.to_owned(), sha.clone());
    s.commits.push(Commit { repo: repo_id.to_owned(), branch: rev.to_owned(), sha: sha.clone(), summary, operations });
    json_response(
        200,
        json!({"success": true, "commitOid": sha, "commitUrl": format!("{url}/{repo_id}/commit/{sha}"), "commitMessage": ""}),
    )
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&b| b == b'=').count();
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= if b == b'=' { 0 } else { value(b)? } << (18 - 6 * i);
        }
        let take = 3 - pad;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}
