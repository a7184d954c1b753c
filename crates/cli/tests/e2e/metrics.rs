//! Issue 7: the Prometheus endpoint, scraped during an end-to-end batch import, shows the
//! counters moving with the right labels.

use std::time::Duration;

use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;

use crate::helpers::EndToEnd;

async fn scrape(url: &str) -> String {
    service_runtime::install_crypto_provider();
    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

test_support::on_both_backends! {
    async fn the_metrics_endpoint_shows_an_imports_counters_moving_with_their_labels(db) {
        let e2e = EndToEnd::start(&db, 120).await;
        let category = format!("metrics-{}", uuid::Uuid::new_v4().simple());
        let category_label = format!("monitoring_category=\"{category}\"");
        let before = scrape(&e2e.stack.metrics_url).await;
        assert_eq!(value(&before, "import_users_total", &[&category_label]), 0.0);

        let start = importer_pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope: Some(directory_pb::Scope { scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})) }),
            options: Some(importer_pb::BatchOptions { monitoring_category: category.clone(), ..Default::default() }),
            ..Default::default()
        };
        let job = e2e.importer.clone().start_batch_import(start).await.unwrap().into_inner().job.unwrap();
        let ended = loop {
            let job = e2e.importer.clone().get_job(importer_pb::GetJobRequest { job_id: job.job_id.clone() }).await.unwrap().into_inner().job.unwrap();
            if job.finished_at_ms > 0 { break job; }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let counts = ended.counts.unwrap();
        assert!(counts.created > 0);

        let after = scrape(&e2e.stack.metrics_url).await;
        assert_eq!(value(&after, "import_users_total", &[&category_label, "outcome=\"created\""]), counts.created as f64);
        assert_eq!(value(&after, "import_users_total", &[&category_label, "outcome=\"skipped\""]), counts.skipped as f64);
        assert_eq!(value(&after, "import_chunk_seconds_count", &[&category_label]), ended.chunks_planned as f64, "one latency sample per chunk");
        assert!(value(&after, "import_jobs_total", &["status=\"completed\""]) >= 1.0, "jobs by status");
        assert!(value(&after, "import_queue_lag_seconds_count", &[]) >= ended.chunks_planned as f64, "queue lag per delivery");
        let started = "service=\"userimport.importer.v1.ImporterService\",method=\"StartBatchImport\",code=\"OK\"";
        assert!(value(&after, "grpc_server_requests_total", &[started]) >= 1.0, "gRPC calls by method and code");
        assert!(value(&after, "grpc_server_request_seconds_count", &["method=\"GetJob\""]) >= 1.0, "gRPC latency");
        let registry_calls = "service=\"userimport.registry.v1.RegistryService\",method=\"ImportUsers\"";
        assert!(value(&after, "grpc_server_requests_total", &[registry_calls]) >= ended.chunks_planned as f64);
        assert!(value(&after, "graph_requests_total", &["status=\"200\""]) >= 1.0, "Graph requests by status (the start-up sync)");

        // A refused call is counted with its code too.
        let refused = e2e.importer.clone().get_job(importer_pb::GetJobRequest { job_id: "no-such-job".into() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        let last = scrape(&e2e.stack.metrics_url).await;
        assert!(value(&last, "grpc_server_requests_total", &["method=\"GetJob\"", "code=\"NOT_FOUND\""]) >= 1.0);
    }
}
