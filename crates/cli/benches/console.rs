//! The web console's page times (issue 16): the Import users page and its search-as-you-type
//! requests over a tenant of `BENCH_USERS` (default 100,000) directory users, then, after a
//! batch import of everyone, the Users page. Pages are fetched over HTTP as a browser fetches
//! them (signed in, with the session cookie), one at a time; each measure is 200 requests.
//!
//!   USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   BENCH_USERS=100000 cargo bench -p cli --bench console
//!
//! `BENCH_BACKEND=sqlite` runs the stack on SQLite files instead.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use cli::stack::{DirectorySource, Ports, Stack, StackAuth, StackOptions, Storage};
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;

const REQUESTS: usize = 200;

fn main() -> anyhow::Result<()> {
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sqlite = std::env::var("BENCH_BACKEND").is_ok_and(|b| b == "sqlite");
    let storage = if sqlite {
        Storage::Sqlite(
            std::env::temp_dir().join(format!("bench-console-{}", uuid::Uuid::new_v4().simple())),
        )
    } else {
        Storage::Postgres {
            url: std::env::var("USERIMPORT_TEST_DATABASE_URL")
                .context("set USERIMPORT_TEST_DATABASE_URL, or BENCH_BACKEND=sqlite")?,
            schema_prefix: format!("bench_console_{}", uuid::Uuid::new_v4().simple()),
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(bench(storage.clone(), users));
    runtime.block_on(storage.discard())?;
    result
}

/// A signed-in browser's HTTP: the session cookie on every request.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn sign_in(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let page = http.get(format!("{base}/sign-in")).send().await?;
        let binding = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("userimport_sign_in="))
            .and_then(|v| v.split(';').next())
            .context("no sign-in cookie")?
            .to_owned();
        let signed = http
            .post(format!("{base}/sign-in/dev"))
            .header("cookie", format!("userimport_sign_in={binding}"))
            .form(&[
                ("sign_in", binding.as_str()),
                ("principal", "admin"),
                ("next", "/import"),
            ])
            .send()
            .await?;
        let cookie = signed
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("userimport_session="))
            .and_then(|v| v.split(';').next())
            .context("no session cookie")?
            .to_owned();
        Ok(Self {
            http,
            base: base.to_owned(),
            cookie,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        let took = started.elapsed();
        ensure!(status.is_success(), "{path}: {status}: {body:.300}");
        Ok(took)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// `REQUESTS` requests of the paths `path(i)` gives; prints p50 / p95 / p99 in ms.
async fn measure(
    browser: &Browser,
    label: &str,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        times.push(browser.get(&path(i)).await?);
    }
    times.sort();
    println!(
        "{label:<52} p50 {:>6.1} ms  p95 {:>6.1} ms  p99 {:>6.1} ms",
        percentile(&times, 0.50),
        percentile(&times, 0.95),
        percentile(&times, 0.99)
    );
    Ok(())
}

/// Search texts as a person types them: 1, 2 and 3 letters of names in the tenant.
fn prefixes(names: &[String], letters: usize) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| n.get(..letters).map(str::to_owned))
        .collect()
}

async fn bench(storage: Storage, users: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        storage,
        directory: DirectorySource::Emulator { users },
        ports: Ports::ANY,
        companies: Vec::new(),
        chunk_size: 1000,
        auth: StackAuth::Insecure,
        auto_import: false,
        sync_groups: Vec::new(),
        delta_interval_secs: 0,
        console: Some(0),
    })
    .await?;
    stack
        .directory
        .sync_now(directory_sync::domain::SyncMode::Full, false)
        .await?;
    println!(
        "{users} directory users mirrored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = stack
        .emulator
        .as_ref()
        .context("no emulator")?
        .users()
        .iter()
        .step_by(97)
        .map(|u| u.display_name.clone())
        .collect();
    let base = stack.console_url.clone().context("no console")?;
    let browser = Browser::sign_in(&base).await?;
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };

    println!("\nNobody imported yet:");
    measure(&browser, "Import users page (first page of 50)", |_| {
        "/import".to_owned()
    })
    .await?;
    for letters in 1..=3 {
        let texts = prefixes(&names, letters);
        measure(
            &browser,
            &format!("  search as you type, {letters} letter(s) (list only)"),
            |i| {
                format!(
                    "/import?search={}&fragment=results",
                    enc(&texts[i % texts.len()])
                )
            },
        )
        .await?;
    }

    let started = Instant::now();
    let mut importer = ImporterServiceClient::connect(stack.importer_url.clone()).await?;
    let job = importer
        .start_batch_import(importer_pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope: Some(directory_pb::Scope {
                scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("no job")?;
    loop {
        let now = importer
            .get_job(importer_pb::GetJobRequest {
                job_id: job.job_id.clone(),
            })
            .await?
            .into_inner()
            .job
            .context("no job")?;
        if matches!(
            now.status(),
            importer_pb::JobStatus::Completed
                | importer_pb::JobStatus::Failed
                | importer_pb::JobStatus::Cancelled
        ) {
            println!(
                "\nEveryone batch-imported in {:.1} s ({:?}, {:?}):",
                started.elapsed().as_secs_f64(),
                now.status(),
                now.counts
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    measure(&browser, "Users page (first page of 50)", |_| {
        "/users".to_owned()
    })
    .await?;
    measure(&browser, "Users page, without roles", |_| {
        "/users?without_roles=1".to_owned()
    })
    .await?;
    let texts = prefixes(&names, 2);
    measure(&browser, "Users page, 2-letter search", |i| {
        format!("/users?search={}", enc(&texts[i % texts.len()]))
    })
    .await?;
    measure(&browser, "Import users page (everyone imported)", |_| {
        "/import".to_owned()
    })
    .await?;
    measure(&browser, "Jobs page", |_| "/jobs".to_owned()).await?;
    stack.stop().await
}
