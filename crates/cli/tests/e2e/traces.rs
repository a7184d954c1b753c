//! Issue 7: one batch import is one trace — the trace context crosses every gRPC hop (request
//! metadata) and every queue message (its headers). Spans are recorded in memory by the same
//! OpenTelemetry layer the services export with over OTLP.
//!
//! The services run in this test's thread (a current-thread runtime) so the recording
//! subscriber, set for this thread only, sees all of them.

use std::collections::HashSet;
use std::time::Duration;

use cli::stack::{DirectorySource, Ports, Stack, StackAuth, StackOptions};
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use tracing_subscriber::layer::SubscriberExt as _;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn server_spans<'a>(spans: &'a [SpanData], method: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| {
            s.name == "grpc.server" && attribute(s, "rpc.method").as_deref() == Some(method)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_import_is_one_trace_across_grpc_hops_and_queue_messages() {
    test_support::init();
    service_runtime::trace::install_propagator();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(service_runtime::telemetry::otel_layer(&provider, "e2e"));
    let _guard = tracing::subscriber::set_default(subscriber);

    // Postgres: SQLite's driver works on threads of its own, where this thread's recording
    // subscriber is not in force.
    let Some(db) = test_support::TestDatabase::postgres().await else {
        return;
    };
    let stack = Stack::start(StackOptions {
        storage: crate::helpers::storage_for(&db),
        directory: DirectorySource::Emulator { users: 90 },
        ports: Ports::ANY,
        companies: Vec::new(),
        chunk_size: 30,
        auth: StackAuth::Insecure,
        auto_import: false,
        sync_groups: Vec::new(),
        delta_interval_secs: 0,
        console: None,
    })
    .await
    .unwrap();
    stack
        .directory
        .sync_now(directory_sync::domain::SyncMode::Full, false)
        .await
        .unwrap();

    // The caller (as the CLI would) starts the trace and sends its context with the call.
    let mut importer = importer_pb::importer_service_client::ImporterServiceClient::connect(
        stack.importer_url.clone(),
    )
    .await
    .unwrap();
    let root = tracing::info_span!("cli.batch_start");
    let job = {
        let _entered = root.enter();
        let mut request = tonic::Request::new(importer_pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope: Some(directory_pb::Scope {
                scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
            }),
            ..Default::default()
        });
        service_runtime::trace::inject_into(request.metadata_mut());
        request
    };
    let job = importer
        .start_batch_import(job)
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    loop {
        let seen = importer
            .get_job(importer_pb::GetJobRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if seen.finished_at_ms > 0 {
            assert_eq!(
                seen.counts.unwrap().created + seen.counts.unwrap().skipped,
                90
            );
            assert_eq!(seen.chunks_planned, 3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.stop().await.unwrap();
    drop(root);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let root = spans
        .iter()
        .find(|s| s.name == "cli.batch_start")
        .expect("the caller's span");
    let trace: TraceId = root.span_context.trace_id();
    let started = server_spans(&spans, "StartBatchImport");
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].span_context.trace_id(),
        trace,
        "gRPC hop: the caller and import-worker share the trace"
    );
    assert_eq!(started[0].parent_span_id, root.span_context.span_id());

    let plan = spans
        .iter()
        .find(|s| s.name == "import.plan")
        .expect("the planning span");
    assert_eq!(
        plan.span_context.trace_id(),
        trace,
        "planning continues the job's trace"
    );
    let streamed = server_spans(&spans, "StreamUsers");
    assert!(
        streamed.iter().any(|s| s.span_context.trace_id() == trace),
        "gRPC hop to directory-sync"
    );

    // Queue hop: every chunk's consumer span continues the planner's trace, with a span of the
    // planning side as its parent.
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let ids: HashSet<_> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
    let chunks: Vec<&SpanData> = spans.iter().filter(|s| s.name == "import.chunk").collect();
    assert_eq!(chunks.len(), 3, "one consumer span per chunk");
    for chunk in &chunks {
        assert_eq!(
            chunk.span_context.trace_id(),
            trace,
            "the message carried the trace"
        );
        assert!(
            ids.contains(&chunk.parent_span_id),
            "the chunk's parent is a span of the planning side"
        );
    }
    // And on to the registry: each chunk's ImportUsers call is a child of its chunk span.
    let chunk_ids: HashSet<_> = chunks.iter().map(|s| s.span_context.span_id()).collect();
    let imports = server_spans(&spans, "ImportUsers");
    assert!(imports.len() >= 3);
    for import in imports {
        assert_eq!(import.span_context.trace_id(), trace);
        assert!(
            chunk_ids.contains(&import.parent_span_id),
            "registry call made within its chunk"
        );
    }
}
