//! Issue 14: every input is bounded and checked at the edge. Every RPC of the three services,
//! enumerated from the descriptor set, is called with a NUL byte, an over-long value and an
//! unknown enum number in each of its fields (at any depth); metrics keep a closed set of
//! labels; page tokens belong to their query; repeated ids count once; errors quote little;
//! a page of users fits the message limit whatever its users hold.

use std::collections::HashMap;

use futures::StreamExt as _;
use prost::Message as _;
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::registry::v1 as registry_pb;
use service_runtime::validate::string_limit;
use tonic::Code;
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::helpers::EndToEnd;

/// Sends and receives raw message bytes, so any RPC can be called with any encoding.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let remaining = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, remaining).to_vec()))
    }
}

/// Calls `path` with `message` (encoded); the answer's status.
async fn call_raw(channel: Channel, path: &str, message: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    match grpc.unary(tonic::Request::new(message), path, Raw).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

/// The product's messages and enums by full name (`.package.Message`).
struct Descriptors {
    messages: HashMap<String, prost_types::DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
    /// (service full name, method path, input type)
    methods: Vec<(String, String, String)>,
}

fn descriptors() -> Descriptors {
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut messages = HashMap::new();
    let mut enums = HashMap::new();
    let mut methods = Vec::new();
    for file in &set.file {
        let prefix = format!(".{}", file.package());
        for e in &file.enum_type {
            enums.insert(
                format!("{prefix}.{}", e.name()),
                e.value.iter().map(|v| v.number()).collect(),
            );
        }
        let mut stack: Vec<(String, prost_types::DescriptorProto)> = file
            .message_type
            .iter()
            .map(|m| (format!("{prefix}.{}", m.name()), m.clone()))
            .collect();
        while let Some((name, message)) = stack.pop() {
            for e in &message.enum_type {
                enums.insert(
                    format!("{name}.{}", e.name()),
                    e.value.iter().map(|v| v.number()).collect(),
                );
            }
            for nested in &message.nested_type {
                stack.push((format!("{name}.{}", nested.name()), nested.clone()));
            }
            messages.insert(name, message);
        }
        for service in &file.service {
            let service_name = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                methods.push((
                    service_name.clone(),
                    format!("/{service_name}/{}", method.name()),
                    method.input_type().to_owned(),
                ));
            }
        }
    }
    Descriptors {
        messages,
        enums,
        methods,
    }
}

/// One bad request: the field's path, what is wrong, the encoded message.
struct Case {
    path: String,
    what: &'static str,
    message: Vec<u8>,
}

fn length_delimited(number: i32, value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    prost::encoding::encode_key(
        number as u32,
        prost::encoding::WireType::LengthDelimited,
        &mut buf,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut buf);
    buf.extend_from_slice(value);
    buf
}

/// Every bad variant of every string and enum field of `message`, nested messages included
/// (to a depth of 3), each alone in an otherwise empty request.
fn cases(d: &Descriptors, message: &str, depth: usize) -> Vec<Case> {
    use prost_types::field_descriptor_proto::{Label, Type};
    let mut out = Vec::new();
    let Some(descriptor) = d.messages.get(message) else {
        return out;
    };
    for field in &descriptor.field {
        let path = if field.label() == Label::Repeated {
            format!("{}[0]", field.name())
        } else {
            field.name().to_owned()
        };
        match field.r#type() {
            Type::String => {
                let long = "a".repeat(string_limit(field.name()) + 1);
                for (what, value) in [
                    ("a NUL byte", "a\0b".to_owned()),
                    ("an over-long value", long),
                ] {
                    out.push(Case {
                        path: path.clone(),
                        what,
                        message: length_delimited(field.number(), value.as_bytes()),
                    });
                }
            }
            Type::Enum => {
                let declared = &d.enums[field.type_name()];
                let unknown = declared.iter().max().unwrap() + 1000;
                let mut buf = Vec::new();
                prost::encoding::encode_key(
                    field.number() as u32,
                    prost::encoding::WireType::Varint,
                    &mut buf,
                );
                prost::encoding::encode_varint(unknown as u64, &mut buf);
                out.push(Case {
                    path,
                    what: "an unknown enum value",
                    message: buf,
                });
            }
            Type::Message if depth < 3 => {
                for inner in cases(d, field.type_name(), depth + 1) {
                    out.push(Case {
                        path: format!("{path}.{}", inner.path),
                        what: inner.what,
                        message: length_delimited(field.number(), &inner.message),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// What the services hold, to check that refused calls wrote nothing.
async fn holdings(e2e: &EndToEnd) -> String {
    let users = e2e.registry_users().await.len();
    let mut registry = e2e.registry.clone();
    let companies = registry
        .list_companies(registry_pb::ListCompaniesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let roles = registry
        .list_roles(registry_pb::ListRolesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let events = registry
        .list_audit_events(registry_pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events
        .len();
    let mut importer = e2e.importer.clone();
    let jobs = importer
        .list_jobs(importer_pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    let rules = importer
        .list_role_rules(importer_pb::ListRoleRulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let runs = e2e
        .directory
        .clone()
        .list_sync_runs(directory_pb::ListSyncRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs
        .len();
    format!(
        "users {users}, companies {companies:?}, roles {roles:?}, events {events}, jobs {jobs}, \
         rules {rules:?}, runs {runs}"
    )
}

/// The table-driven test, on a runtime of this thread so its ERROR count is the services'.
fn every_field_of_every_rpc_is_checked_at_the_edge(db: test_support::TestDatabase) {
    let e2e = EndToEnd::start(&db, 5).await_on_this_thread();
    let errors_before = test_support::errors_logged_on_this_thread();
    let d = descriptors();
    let before = holdings(&e2e).await_on_this_thread();
    let urls = [
        (
            "userimport.directory.v1.DirectoryService",
            e2e.stack.directory_url.clone(),
        ),
        (
            "userimport.registry.v1.RegistryService",
            e2e.stack.registry_url.clone(),
        ),
        (
            "userimport.importer.v1.ImporterService",
            e2e.stack.importer_url.clone(),
        ),
    ];
    let mut checked = 0;
    let mut rpcs = 0;
    for (service, url) in &urls {
        let channel = async {
            Channel::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap()
        }
        .await_on_this_thread();
        for (method_service, path, input) in &d.methods {
            if method_service != service {
                continue;
            }
            rpcs += 1;
            for case in cases(&d, input, 0) {
                let status = call_raw(channel.clone(), path, case.message).await_on_this_thread();
                let context = format!("{path} with {} in {}: {status:?}", case.what, case.path);
                assert_eq!(status.code(), Code::InvalidArgument, "{context}");
                let fields: Vec<String> = status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                assert_eq!(fields, std::slice::from_ref(&case.path), "{context}");
                assert!(status.message().len() < 200, "{context}");
                checked += 1;
            }
        }
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await_on_this_thread()
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    assert!(rpcs >= 38, "every RPC of the three services: {rpcs}");
    eprintln!("{rpcs} RPCs, {checked} bad requests refused by field");
    assert!(checked >= 150, "cases: {checked}");
    assert_eq!(
        holdings(&e2e).await_on_this_thread(),
        before,
        "nothing was written"
    );
    assert_eq!(
        test_support::errors_logged_on_this_thread(),
        errors_before,
        "no ERROR was logged"
    );
    // Still serving real work.
    let ids = vec![e2e.tenant()[0].id.clone()];
    let imported = e2e.import(ids, "USMF").await_on_this_thread().unwrap();
    assert_eq!(imported.counts.unwrap().created, 1);
    e2e.stack.stop().await_on_this_thread().unwrap();
}

/// Runs a future to its end on a current-thread runtime of this thread.
trait AwaitOnThisThread: std::future::Future + Sized {
    fn await_on_this_thread(self) -> Self::Output {
        RUNTIME.with(|runtime| runtime.block_on(self))
    }
}

impl<F: std::future::Future> AwaitOnThisThread for F {}

std::thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

#[test]
fn a_nul_an_over_long_value_or_an_unknown_enum_in_any_field_of_any_rpc_is_refused_by_field_on_sqlite()
 {
    test_support::init();
    let db = test_support::TestDatabase::sqlite().await_on_this_thread();
    every_field_of_every_rpc_is_checked_at_the_edge(db);
}

#[test]
fn a_nul_an_over_long_value_or_an_unknown_enum_in_any_field_of_any_rpc_is_refused_by_field_on_postgres()
 {
    test_support::init();
    let Some(db) = test_support::TestDatabase::postgres().await_on_this_thread() else {
        return;
    };
    every_field_of_every_rpc_is_checked_at_the_edge(db);
}

async fn scrape(url: &str) -> String {
    service_runtime::install_crypto_provider();
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_calls_to_made_up_methods_leave_metrics_within_ten_percent_of_their_size() {
    test_support::init();
    let db = test_support::TestDatabase::sqlite().await;
    let e2e = EndToEnd::start(&db, 5).await;
    let channel = Channel::from_shared(e2e.stack.registry_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let calls = |range: std::ops::Range<usize>| {
        let channel = channel.clone();
        futures::stream::iter(range)
            .map(move |n| {
                let channel = channel.clone();
                async move {
                    call_raw(
                        channel,
                        &format!("/made.up.Service{n}/Method{n}"),
                        Vec::new(),
                    )
                    .await
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
    };
    // A few first, so the series they do count exist before the measure.
    let first = calls(0..10).await;
    assert!(first.iter().all(|s| s.code() != Code::Ok), "{first:?}");
    let before = scrape(&e2e.stack.metrics_url).await;
    calls(10..20_010).await;
    let after = scrape(&e2e.stack.metrics_url).await;
    assert!(!after.contains("made.up"), "a made-up path became a label");
    assert!(
        (after.len() as f64) <= before.len() as f64 * 1.1,
        "metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains("service=\"unknown\",method=\"unknown\""));
    eprintln!(
        "metrics: {} bytes before, {} after 20,000 made-up calls",
        before.len(),
        after.len()
    );
    e2e.stack.stop().await.unwrap();
}

test_support::on_both_backends! {
    async fn a_page_token_from_one_query_is_refused_on_another(db) {
        let e2e = EndToEnd::start(&db, 6).await;
        let ids: Vec<String> = e2e.tenant().iter().take(4).map(|u| u.id.clone()).collect();
        e2e.import(ids, "USMF").await.unwrap();
        let mut registry = e2e.registry.clone();
        let query = registry_pb::ListUsersRequest { page_size: 1, ..Default::default() };
        let first = registry.list_users(query.clone()).await.unwrap().into_inner();
        assert!(!first.next_page_token.is_empty());
        // The same query goes on.
        let second = registry
            .list_users(registry_pb::ListUsersRequest { page_token: first.next_page_token.clone(), ..query.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(second.users[0].user_id, first.users[0].user_id);
        // Another query refuses it.
        let other = registry_pb::ListUsersRequest {
            page_token: first.next_page_token.clone(),
            enabled: Some(true),
            ..query.clone()
        };
        let refused = registry.list_users(other).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("page_token"), "{}", refused.message());
        // A token of another RPC is refused too.
        let audit = registry_pb::ListAuditEventsRequest { page_token: first.next_page_token.clone(), ..Default::default() };
        assert_eq!(registry.list_audit_events(audit).await.unwrap_err().code(), Code::InvalidArgument);
        // And in directory-sync: a listing of guests refuses a token of a listing of everyone.
        let mut directory = e2e.directory.clone();
        let everyone = directory_pb::ListUsersRequest { page_size: 1, not_imported_only: Some(false), ..Default::default() };
        let page = directory.list_users(everyone.clone()).await.unwrap().into_inner();
        assert!(!page.next_page_token.is_empty());
        let guests = directory_pb::ListUsersRequest {
            page_token: page.next_page_token.clone(),
            account_type: directory_pb::AccountType::Guest.into(),
            ..everyone.clone()
        };
        assert_eq!(directory.list_users(guests).await.unwrap_err().code(), Code::InvalidArgument);
        let next = directory_pb::ListUsersRequest { page_token: page.next_page_token, ..everyone };
        directory.list_users(next).await.unwrap();
    }

    async fn duplicate_ids_are_counted_once(db) {
        let e2e = EndToEnd::start(&db, 6).await;
        let tenant = e2e.tenant();
        let (a, b) = (tenant[0].id.clone(), tenant[1].id.clone());
        let answer = e2e
            .import(vec![a.clone(), a.to_uppercase(), a.clone(), b.clone()], "USMF")
            .await
            .unwrap();
        let ids: Vec<&str> = answer.outcomes.iter().map(|o| o.object_id.as_str()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()], "one outcome per distinct id, in order");
        let counts = answer.counts.unwrap();
        assert_eq!((counts.created, counts.already_present, counts.failed), (2, 0, 0));
        assert_eq!(e2e.registry_users().await.len(), 2);
        let job = e2e
            .importer
            .clone()
            .get_job(importer_pb::GetJobRequest { job_id: answer.request_id })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        assert_eq!(job.counts.unwrap().created, 2, "the job record counts them once too");
    }

    async fn an_error_quotes_a_short_prefix_of_long_input(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        // 300 object ids the directory does not know: five named, the rest counted.
        let unknown: Vec<String> = (0..300).map(|n| format!("0badc0de-0000-4000-8000-{n:012x}")).collect();
        let request = importer_pb::ImportSelectedRequest {
            object_ids: unknown.clone(),
            company: "USMF".into(),
            all_or_nothing: true,
            ..Default::default()
        };
        let refused = e2e.importer.clone().import_selected(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert!(refused.message().contains(&unknown[0]), "{}", refused.message());
        assert!(!refused.message().contains(&unknown[5]), "{}", refused.message());
        assert!(refused.message().contains("…and 295 more"), "{}", refused.message());
        assert!(refused.message().len() < 400, "{} bytes", refused.message().len());
        // A 3 MB id is refused by its length, not quoted.
        let huge = "a".repeat(3 * 1024 * 1024);
        let refused = e2e.import(vec![huge], "USMF").await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{}", &refused.message()[..200.min(refused.message().len())]);
        assert!(refused.message().contains("object_ids[0]"), "{}", refused.message());
        assert!(refused.message().len() < 200, "{} bytes", refused.message().len());
        // A value within its limit but wrong is quoted to 64 characters at most.
        let group = "g".repeat(64);
        let start = importer_pb::StartBatchImportRequest {
            company: "USMF".into(),
            scope: Some(directory_pb::Scope { scope: Some(directory_pb::scope::Scope::GroupId(group.clone())) }),
            ..Default::default()
        };
        let refused = e2e.importer.clone().start_batch_import(start).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().len() < 64 + 100, "{}", refused.message());
    }

    async fn a_user_list_page_fits_the_message_limit_with_every_field_at_its_maximum(db) {
        let e2e = EndToEnd::start(&db, 1).await;
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let users: Vec<registry_pb::NewUser> = (0..1000)
            .map(|n| {
                let suffix = format!("{n:04}@contoso.com");
                registry_pb::NewUser {
                    tenant_id: tenant.into(),
                    object_id: format!("00000000-0000-4000-8000-{n:012x}"),
                    network_alias: format!("{}{suffix}", "a".repeat(string_limit("network_alias") - suffix.len())),
                    network_domain: "d".repeat(string_limit("network_domain")),
                    email: format!("{}{suffix}", "m".repeat(string_limit("email") - suffix.len())),
                    // Four bytes a character: the most bytes a stored name can take.
                    name: "𝔸".repeat(string_limit("name") / 4),
                    enabled: true,
                    account_type: registry_pb::AccountType::Member.into(),
                }
            })
            .collect();
        let import = registry_pb::ImportUsersRequest {
            import_id: "i".repeat(string_limit("import_id")),
            company: "USMF".into(),
            users,
            dry_run: false,
            private: false,
        };
        let outcomes = e2e.registry.clone().import_users(import).await.unwrap().into_inner().outcomes;
        assert_eq!(outcomes.len(), 1000);
        assert!(outcomes.iter().all(|o| o.kind() == registry_pb::OutcomeKind::Created), "{:?}", outcomes[0]);
        let page = e2e
            .registry
            .clone()
            .list_users(registry_pb::ListUsersRequest { page_size: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.users.len(), 1000);
        let size = page.encoded_len();
        eprintln!("a page of 1000 users with every field at its maximum: {size} bytes");
        assert!(size < service_runtime::grpc::MAX_MESSAGE_BYTES / 2, "{size} bytes");
    }
}
