//! The JSON access log: one object per request. The worker that finished
//! the request formats its line into a shared batch; a thread of its own
//! writes the batch out every [`DRAIN_EVERY`], so that a slow disk never
//! slows a request (a full batch drops the line and counts it). Reopened
//! on SIGUSR1 for log rotation (rename the file, send SIGUSR1: new lines
//! go to a new file at the configured path).
//!
//! Why the worker formats: handing the record itself to the writer thread
//! (as this did first) moved a few hundred bytes of record per request
//! across threads and freed its parts on the other thread, which the
//! allocator pays for on both; `cargo xtask bench l7` measured the log at
//! more than half of the observability cost that way. Now only the line's
//! bytes cross, in one copy under a short lock.
//!
//! Field names are stable (docs/access-log.md); absent facts are `null`.
use std::{
    cell::RefCell,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;

use super::log_line::LineWriter;
use crate::l7::record::RequestRecord;

/// One access-log line (without the newline).
pub fn line(r: &RequestRecord) -> String {
    let mut out = Vec::with_capacity(512);
    LineWriter::default().write(r, &mut out);
    // Every byte written is ASCII or comes from a `&str`.
    String::from_utf8(out).unwrap_or_default()
}

/// Where lines go.
enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        match self {
            Target::Stdout => Ok(Box::new(std::io::stdout())),
            Target::File(p) => Ok(Box::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
        }
    }
}

/// Counters the writer keeps (the metrics' own handles).
#[derive(Clone, Debug, Default)]
pub struct LogCounters {
    pub lines: Counter,
    pub dropped: Counter,
    pub reopens: Counter,
}

/// Lines formatted and not yet written.
#[derive(Debug, Default)]
struct Batch {
    buf: Vec<u8>,
    lines: usize,
}

/// What the workers and the writer share.
#[derive(Debug)]
struct Shared {
    batch: Mutex<Batch>,
    /// The most lines a batch holds (`access_log.queue`).
    max_lines: usize,
    reopen: AtomicBool,
    closed: AtomicBool,
}

thread_local! {
    /// Each worker's line formatter and scratch line (reused: formatting
    /// a line allocates nothing).
    static LOCAL: RefCell<(LineWriter, Vec<u8>)> = RefCell::new((LineWriter::default(), Vec::with_capacity(1024)));
}

/// The log's handle; cheap to call from any worker.
pub struct AccessLog {
    shared: Arc<Shared>,
    counters: LogCounters,
    writer: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Opens `path` (`-`: stdout) and starts the writer thread with a
    /// batch of at most `queue` lines.
    pub fn open(path: &Path, queue: usize, counters: LogCounters) -> std::io::Result<AccessLog> {
        let target = if path == Path::new("-") {
            Target::Stdout
        } else {
            Target::File(path.to_path_buf())
        };
        let out = target.open()?;
        Ok(AccessLog::start(target, out, queue, counters))
    }

    fn start(
        target: Target,
        out: Box<dyn Write + Send>,
        queue: usize,
        counters: LogCounters,
    ) -> AccessLog {
        let shared = Arc::new(Shared {
            batch: Mutex::default(),
            max_lines: queue,
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let s = shared.clone();
        let c = counters.clone();
        let writer = std::thread::Builder::new()
            .name("xlb-access-log".into())
            .spawn(move || {
                // Drains the workers' lines: a data-plane thread, whose
                // falling behind would drop lines under load.
                crate::sched::data_plane_thread();
                write_loop(target, out, &s, &c)
            })
            .ok();
        AccessLog {
            shared,
            counters,
            writer,
        }
    }

    /// Adds `record`'s line to the batch; drops it (counted) when the
    /// batch is full.
    pub fn push(&self, record: &RequestRecord) {
        LOCAL.with(|local| {
            let (writer, line) = &mut *local.borrow_mut();
            line.clear();
            writer.write(record, line);
            line.push(b'\n');
            let Ok(mut b) = self.shared.batch.lock() else {
                self.counters.dropped.inc();
                return;
            };
            if b.lines >= self.shared.max_lines {
                drop(b);
                self.counters.dropped.inc();
                return;
            }
            b.buf.extend_from_slice(line);
            b.lines += 1;
        });
    }

    /// Asks the writer to reopen the file (SIGUSR1); it does at its next
    /// drain ([`DRAIN_EVERY`]), also when no request comes.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer ends after writing what is batched.
        self.shared.closed.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// How often the writer drains the batch. The writer polls instead of
/// waiting to be woken: a waiting thread must be woken by every line (a
/// futex call and a context switch per request, which measured at a third
/// of the proxy's throughput on one CPU); a sleeping one costs the workers
/// nothing. Lines reach the file within this interval.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

fn write_loop(
    target: Target,
    mut out: Box<dyn Write + Send>,
    shared: &Shared,
    counters: &LogCounters,
) {
    let mut spare: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        std::thread::sleep(DRAIN_EVERY);
        // Seen before the drain: lines batched before a stop are written.
        let closing = shared.closed.load(Ordering::Acquire);
        // Lines batched before a reopen go to the old file.
        let reopening = shared.reopen.swap(false, Ordering::AcqRel);
        let lines = match shared.batch.lock() {
            Ok(mut b) => {
                std::mem::swap(&mut b.buf, &mut spare);
                std::mem::take(&mut b.lines)
            }
            Err(_) => 0,
        };
        if !spare.is_empty() {
            match out.write_all(&spare).and_then(|()| out.flush()) {
                Ok(()) => {
                    counters.lines.inc_by(lines as u64);
                }
                Err(e) => {
                    log::warn!("access log: {e}");
                    counters.dropped.inc_by(lines as u64);
                }
            }
            spare.clear();
        }
        if reopening {
            match target.open() {
                Ok(w) => {
                    out = w;
                    counters.reopens.inc();
                }
                Err(e) => log::error!("access log: reopen failed, writing on to the old file: {e}"),
            }
        }
        if closing {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::{mpsc, Mutex},
        time::SystemTime,
    };

    use serde_json::Value;

    use super::*;
    use crate::l7::record::RateLimitVerdict;

    fn record(id: &str) -> RequestRecord {
        RequestRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            listener: "web".into(),
            client: "192.0.2.7:5000".parse::<SocketAddr>().unwrap(),
            method: http::Method::GET,
            host: http::HeaderValue::from_static("a.example"),
            target: "/x".parse().unwrap(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 0,
            bytes_out: 5,
            total: Duration::from_micros(1500),
            connect: Some(Duration::ZERO),
            first_byte: Some(Duration::from_micros(900)),
            route: Some("r1".into()),
            upstream: Some("u1".into()),
            node: Some("127.0.0.1:8080".parse().unwrap()),
            retries: vec!["upstream-refused"],
            cache: None,
            rate_limit: RateLimitVerdict::None,
            error: None,
            request_id: http::HeaderValue::from_str(id).unwrap(),
            tls_version: None,
            sni: None,
            complete: true,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_documented_fields() {
        let v: Value = serde_json::from_str(&line(&record("abc"))).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["first_byte_ms"], 0.9);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["retry_reasons"][0], "upstream-refused");
        assert_eq!(v["node"], "127.0.0.1:8080");
        assert!(v["error"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 25);
        let doc = include_str!("../../../docs/access-log.md");
        for field in v.as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("| `{field}` |")),
                "{field} is not in docs/access-log.md"
            );
        }
    }

    /// A writer stuck on its output: the queue fills, and pushes drop and
    /// count instead of waiting.
    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        struct Stuck {
            entered: mpsc::Sender<()>,
            release: mpsc::Receiver<()>,
            seen: Arc<Mutex<Vec<u8>>>,
        }
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _ = self.entered.send(());
                // Blocks until the test drops its sender; then never again.
                let _ = self.release.recv();
                self.seen.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (entered, in_write) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counters = LogCounters::default();
        let log = AccessLog::start(
            Target::Stdout,
            Box::new(Stuck {
                entered,
                release,
                seen: seen.clone(),
            }),
            4,
            counters.clone(),
        );
        // The writer takes the first line and is stuck writing it.
        log.push(&record("first"));
        in_write.recv().unwrap();
        for i in 0..100 {
            log.push(&record(&i.to_string()));
        }
        assert_eq!(counters.dropped.get(), 96, "4 queued, the rest dropped");
        drop(release_tx);
        drop(log);
        assert_eq!(counters.lines.get(), 5);
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["first", "0", "1", "2", "3"]);
    }
}
