//! Starting and stopping real ragd servers for the tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("RAGD_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ragd/models"));
    assert!(
        dir.join("all-MiniLM-L6-v2/model.safetensors").exists(),
        "the built-in model is missing from {}: run `ragd models fetch` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ragd-core/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The msmarco-5k BEIR folder: `RAGD_TEST_DATASET`, else `shared/datasets/msmarco-5k` beside any
/// ancestor of the repository (the team's layout), else `/work/shared/...`.
pub fn dataset() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAGD_TEST_DATASET") {
        return Some(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/datasets/msmarco-5k"))
        .chain([PathBuf::from("/work/shared/datasets/msmarco-5k")])
        .find(|p| p.join("corpus.jsonl").exists())
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// The admin listener (`/metrics`, health).
    pub admin: String,
    pub data: PathBuf,
    env: Vec<(String, String)>,
    /// Where the server's stderr (its log) goes; `None`: the test's own stderr.
    log: Option<PathBuf>,
    pub http: reqwest::Client,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let (child, base, admin) = spawn(data, &env, None);
        Server { child: Some(child), base, admin, data: data.to_owned(), env, log: None, http: reqwest::Client::new() }
    }

    /// As `start_with`, with the server's log (stderr) appended to the file `log`, for the test to read
    /// with `log_text`.
    pub fn start_logged(data: &Path, env: &[(&str, &str)], log: &Path) -> Server {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let (child, base, admin) = spawn(data, &env, Some(log));
        Server { child: Some(child), base, admin, data: data.to_owned(), env, log: Some(log.to_owned()), http: reqwest::Client::new() }
    }

    /// The server's log so far (only for a server started with `start_logged`).
    pub fn log_text(&self) -> String {
        self.log.as_ref().map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to exit; returns how long that took (`None`: it did not
    /// exit within `limit`, and was killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        let (child, base, admin) = spawn(&self.data, &self.env, self.log.as_deref());
        self.child = Some(child);
        self.base = base;
        self.admin = admin;
    }

    /// The server process's id (to tell that it is still the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Peak resident memory of the process so far (VmHWM), in MiB, where /proc tells it.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        decode(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        decode(self.http.delete(self.url(path)).send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        decode(self.http.post(self.url(path)).json(&body).send().await.expect("request")).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self.http.post(self.url(path)).header("content-type", content_type).body(body);
        decode(r.send().await.expect("request")).await
    }

    pub async fn upload(&self, collection: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()));
        let r = self.http.post(self.url(&format!("/api/v1/collections/{collection}/documents?wait=true"))).multipart(form);
        decode(r.send().await.expect("request")).await
    }

    pub async fn create(&self, name: &str) {
        let (s, b) = self.post("/api/v1/collections", json!({ "name": name })).await;
        assert_eq!(s, 201, "{b}");
    }

    pub async fn search(&self, collection: &str, body: Value) -> Value {
        let (s, b) = self.post(&format!("/api/v1/collections/{collection}/search"), body).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Polls a job until it is done or failed.
    pub async fn wait_job(&self, id: &str) -> Value {
        let t = Instant::now();
        loop {
            let (s, job) = self.get(&format!("/api/v1/jobs/{id}")).await;
            assert_eq!(s, 200, "{job}");
            if job["status"] == "done" || job["status"] == "failed" {
                return job;
            }
            assert!(t.elapsed() < Duration::from_secs(600), "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn decode(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn spawn(data: &Path, env: &[(String, String)], log: Option<&Path>) -> (Child, String, String) {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).expect("open the server log")),
        None => Stdio::inherit(),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragd"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--models")
        .arg(models_dir())
        .env("RAGD_LOG", "warn")
        .env("RAGD_ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("RAGD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start ragd");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = String::new();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("ragd admin listening on ") {
                    admin = url.trim().to_owned();
                }
                if let Some(url) = line.strip_prefix("ragd listening on ") {
                    break url.trim().to_owned();
                }
            }
            _ => panic!("ragd exited before listening (see its stderr above)"),
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base, admin)
}
