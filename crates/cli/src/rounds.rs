//! Sync rounds from the command line: a round is started on directory-sync, which owns it, and
//! followed to its end (`sync now`, `directory sync`, `sync watch`). The command's exit code is
//! the round's: a failed round fails the command; a round halted for approval does not (it
//! waits for `sync approve` or `sync reject`, which the command prints).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;

use crate::commands::{Endpoints, describe_run, failed};
use crate::output::{Format, note};

/// A round this command follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub run_id: String,
    /// Another round was running already: this command follows that one instead.
    pub already_running: bool,
}

/// Starts a round. When one is running already, answers that one to follow, unless this is a
/// dry run (the running round would not give the preview asked for).
pub async fn start(endpoints: &Endpoints, delta: bool, dry_run: bool) -> anyhow::Result<Started> {
    let mut client = endpoints.directory().await?;
    let mode = if delta {
        directory_pb::SyncMode::Delta
    } else {
        directory_pb::SyncMode::Full
    };
    let request = directory_pb::SyncNowRequest {
        mode: mode.into(),
        dry_run,
    };
    match client.sync_now(endpoints.request(request)).await {
        Ok(response) => {
            let run = response
                .into_inner()
                .run
                .context("directory-sync answered without a run")?;
            Ok(Started {
                run_id: run.run_id,
                already_running: false,
            })
        }
        Err(status) if status.code() == tonic::Code::Aborted => {
            match (running_run_id(&status), dry_run) {
                (Some(run_id), false) => Ok(Started {
                    run_id,
                    already_running: true,
                }),
                (Some(run_id), true) => anyhow::bail!(
                    "a sync round is already running (run {run_id}); follow it with \
                     `userimport sync watch {run_id}` and start the dry run after it"
                ),
                (None, _) => Err(failed("the sync")(status)),
            }
        }
        Err(status) => Err(failed("the sync")(status)),
    }
}

/// The round running, from directory-sync's `SYNC_BUSY` answer (its `ErrorInfo` names it in
/// `metadata.run_id`; the message is for people).
pub fn running_run_id(status: &tonic::Status) -> Option<String> {
    (service_runtime::error::reason(status).as_deref() == Some("SYNC_BUSY"))
        .then(|| service_runtime::error::metadata(status, "run_id"))
        .flatten()
}

/// How a followed round shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A spinner line that rewrites itself (on a terminal).
    Spinner,
    /// A plain line now and then, for logs (where `format` sends notes).
    Lines(Format),
    Quiet,
}

impl Display {
    /// A spinner when both stdout and stderr are terminals, plain lines otherwise.
    pub fn for_output(format: Format) -> Self {
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            Self::Spinner
        } else {
            Self::Lines(format)
        }
    }
}

/// Plain progress lines are at most this frequent (a new phase is shown at once).
const LINE_EVERY: Duration = Duration::from_secs(5);
/// A watch that broke (directory-sync restarting, the network) is taken up again this often.
const REFOLLOW_ATTEMPTS: u32 = 6;

/// Follows a round until it has ended and answers its last state (with a dry run's preview).
/// A broken watch is taken up again a few times: the round goes on without its follower.
pub async fn follow(
    endpoints: &Endpoints,
    run_id: &str,
    display: Display,
) -> anyhow::Result<directory_pb::WatchSyncRunResponse> {
    let spinner = (display == Display::Spinner).then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        spinner.set_style(style);
        spinner.enable_steady_tick(Duration::from_millis(200));
        spinner
    });
    let mut last_line: Option<(Instant, String)> = None;
    let mut pause = Duration::from_millis(500);
    let mut attempt = 0;
    let result = loop {
        // A watch that brought news before it broke is a new start: only breaks in a row,
        // with nothing heard between them, count towards giving up.
        let mut heard = false;
        let watched = watch_once(endpoints, run_id, |update| {
            heard = true;
            let ended = update
                .run
                .as_ref()
                .is_some_and(|run| run.status() != directory_pb::SyncRunStatus::Running);
            if ended {
                // The caller prints how it ended.
                return;
            }
            let line = progress_line(run_id, update);
            if let Some(spinner) = &spinner {
                spinner.set_message(line);
            } else if let Display::Lines(format) = display {
                let phase_changed = last_line
                    .as_ref()
                    .is_none_or(|(_, phase)| *phase != update.phase);
                let due = last_line
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= LINE_EVERY);
                if phase_changed || due {
                    note(format, line);
                    last_line = Some((Instant::now(), update.phase.clone()));
                }
            }
        })
        .await;
        if heard {
            attempt = 0;
            pause = Duration::from_millis(500);
        }
        match watched {
            Ok(Some(ended)) => break Ok(ended),
            // The stream ended (or broke) before the round: take it up again.
            Ok(None) if attempt < REFOLLOW_ATTEMPTS => {}
            Err(status)
                if attempt < REFOLLOW_ATTEMPTS && service_runtime::grpc::is_retryable(&status) => {}
            Ok(None) => break Err(anyhow::anyhow!("the watch of run {run_id} kept breaking")),
            Err(status) => break Err(failed("following the round")(status)),
        }
        attempt += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    };
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    result
}

/// One watch of the round: `Some` with its last message once it has ended, `None` when the
/// stream stopped before.
async fn watch_once(
    endpoints: &Endpoints,
    run_id: &str,
    mut on_update: impl FnMut(&directory_pb::WatchSyncRunResponse),
) -> Result<Option<directory_pb::WatchSyncRunResponse>, tonic::Status> {
    let mut client = endpoints
        .directory()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("{error:#}")))?;
    let request = directory_pb::WatchSyncRunRequest {
        run_id: run_id.to_owned(),
    };
    let mut stream = client
        .watch_sync_run(endpoints.request(request))
        .await?
        .into_inner();
    while let Some(update) = stream.message().await? {
        let ended = update
            .run
            .as_ref()
            .is_some_and(|run| run.status() != directory_pb::SyncRunStatus::Running);
        on_update(&update);
        if ended {
            return Ok(Some(update));
        }
    }
    Ok(None)
}

/// "run 5f…: reading users · 12000 users · 13 pages · 4000 users/s · 3.1 s"
fn progress_line(run_id: &str, update: &directory_pb::WatchSyncRunResponse) -> String {
    let run = update.run.clone().unwrap_or_default();
    let phase = if update.phase.is_empty() {
        "running"
    } else {
        update.phase.as_str()
    };
    format!(
        "run {run_id}: {phase} · {} users · {} pages · {:.0} users/s · {:.1} s",
        run.users_seen,
        run.pages_read,
        update.users_per_second,
        run.duration_ms.max(0) as f64 / 1000.0
    )
}

/// What a followed round means for the command: a failed round is an error (the command exits
/// non-zero); a halted one prints how to approve or reject it and is not.
pub fn outcome(format: Format, run: &directory_pb::SyncRun) -> anyhow::Result<()> {
    match run.status() {
        directory_pb::SyncRunStatus::Failed => {
            anyhow::bail!("sync run {} failed: {}", run.run_id, run.error)
        }
        directory_pb::SyncRunStatus::AwaitingApproval => {
            note(
                format,
                format!(
                    "run {id} waits for approval: apply it with `userimport sync approve {id}`, \
                     drop it with `userimport sync reject {id}`",
                    id = run.run_id
                ),
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Follows `started` to its end, prints it (and a dry run's preview), and answers the
/// command's outcome.
pub async fn follow_and_report(
    endpoints: &Endpoints,
    format: Format,
    started: &Started,
    dry_run: bool,
) -> anyhow::Result<()> {
    if started.already_running {
        note(
            format,
            format!(
                "a sync round is already running (run {}); following it",
                started.run_id
            ),
        );
    } else {
        note(format, format!("sync run {} started", started.run_id));
    }
    let ended = follow(endpoints, &started.run_id, Display::for_output(format)).await?;
    let run = ended
        .run
        .clone()
        .context("the round ended without its run")?;
    note(format, describe_run(&run));
    if dry_run || ended.preview.is_some() {
        crate::changes::print_sync_preview(format, &run, ended.preview.as_ref())?;
        if run.status() == directory_pb::SyncRunStatus::AwaitingApproval {
            // print_sync_preview said how to approve or reject it.
            return Ok(());
        }
    }
    outcome(format, &run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_run_id_is_read_from_the_busy_answers_error_info() {
        let id = "0b5f3c9e-1d2a-4c3b-9e8f-7a6b5c4d3e2f";
        let busy = service_runtime::error::with_info(
            tonic::Code::Aborted,
            "SYNC_BUSY",
            "a sync round is already running",
            std::collections::HashMap::from([("run_id".to_owned(), id.to_owned())]),
        );
        assert_eq!(running_run_id(&busy), Some(id.to_owned()));
        let other = tonic::Status::aborted(format!("a sync round is already running: run {id}"));
        assert_eq!(running_run_id(&other), None);
    }
}
