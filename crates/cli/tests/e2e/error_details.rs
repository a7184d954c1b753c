//! Every error class reaches a client written in another language (Python's grpcio with
//! grpcio-status, as a client team would use it) as its gRPC code with its `google.rpc`
//! details decoded: the `ErrorInfo` reason, `BadRequest` field violations, `RetryInfo`.

use prost::Message as _;
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::registry::v1 as registry_pb;
use sqlx::Executor as _;
use test_support::TestDatabase;

use crate::helpers::EndToEnd;

/// Python with grpcio and grpcio-status, or `None` (a failure under CI: `.ci/run` installs them).
fn python_grpc() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_status"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI needs python3 with grpcio and grpcio-status (pip install grpcio grpcio-status)");
    }
    eprintln!("skipped: python3 with grpcio and grpcio-status is not installed");
    None
}

struct Case {
    target: String,
    method: &'static str,
    request: Vec<u8>,
}

/// Runs the Python client over `cases`; one decoded status per case.
fn python_calls(python: &str, cases: &[Case]) -> Vec<serde_json::Value> {
    use std::io::Write as _;
    let input = serde_json::json!({
        "cases": cases.iter().map(|c| serde_json::json!({
            "target": c.target,
            "method": c.method,
            "request_hex": c.request.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })).collect::<Vec<_>>(),
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/grpc_status_client.py"
    );
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn target(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

fn create_company(target: &str, code: &str, name: &str) -> Case {
    Case {
        target: target.to_owned(),
        method: "/userimport.registry.v1.RegistryService/CreateCompany",
        request: registry_pb::CreateCompanyRequest {
            company: Some(registry_pb::Company {
                code: code.into(),
                name: name.into(),
            }),
        }
        .encode_to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_class_reaches_a_python_client_as_its_code_and_error_info_reason() {
    let Some(python) = python_grpc() else { return };
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let e2e = EndToEnd::start(&db, 20).await;
    let registry = target(&e2e.stack.registry_url);
    let importer = target(&e2e.stack.importer_url);
    let directory = target(&e2e.stack.directory_url);
    let (server, prefix) = db.postgres_schema().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(server)
        .await
        .unwrap();
    let schema = format!("{prefix}_registry");

    // Database faults as the server reports them, raised by triggers on company inserts.
    let mut faults = Vec::new();
    for (code, state) in [("DSKF", "53100"), ("SERL", "40001"), ("DEFT", "P0001")] {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION {schema}.refuse_{state}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{state}'; END $$; \
             CREATE TRIGGER refuse_{state} BEFORE INSERT ON {schema}.companies FOR EACH ROW \
             WHEN (NEW.code = '{code}') EXECUTE FUNCTION {schema}.refuse_{state}();"
        )))
        .await
        .unwrap();
        faults.push(create_company(&registry, code, "Injected fault"));
    }

    let mut cases = faults;
    cases.extend([
        // A NUL byte, which the database could not store: refused at the edge by field.
        create_company(&registry, "NUL", "Contoso\0 USA"),
        // A field out of bounds, named in BadRequest.
        Case {
            target: registry.clone(),
            method: "/userimport.registry.v1.RegistryService/ListUsers",
            request: registry_pb::ListUsersRequest {
                page_token: "not a token".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        },
        // A company that does not exist, through import-worker.
        Case {
            target: importer.clone(),
            method: "/userimport.importer.v1.ImporterService/ImportSelected",
            request: importer_pb::ImportSelectedRequest {
                object_ids: vec![e2e.tenant()[0].id.clone()],
                company: "NOPE".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        },
        // A sync run that does not exist.
        Case {
            target: directory.clone(),
            method: "/userimport.directory.v1.DirectoryService/ApproveSyncRun",
            request: directory_pb::ApproveSyncRunRequest {
                run_id: uuid::Uuid::new_v4().to_string(),
            }
            .encode_to_vec(),
        },
        // A job that cannot be retried (there is none).
        Case {
            target: importer.clone(),
            method: "/userimport.importer.v1.ImporterService/RetryJob",
            request: importer_pb::RetryJobRequest {
                job_id: uuid::Uuid::new_v4().to_string(),
            }
            .encode_to_vec(),
        },
    ]);
    let answers = python_calls(python, &cases);
    let expected = [
        ("UNAVAILABLE", "DATABASE_UNAVAILABLE", true),
        ("ABORTED", "TRANSACTION_ABORTED", true),
        ("INTERNAL", "INTERNAL", false),
        ("INVALID_ARGUMENT", "INVALID_FIELD", false),
        ("INVALID_ARGUMENT", "INVALID_FIELD", false),
        ("NOT_FOUND", "COMPANY_NOT_FOUND", false),
        ("NOT_FOUND", "SYNC_RUN_NOT_FOUND", false),
        ("NOT_FOUND", "NOT_FOUND", false),
    ];
    assert_eq!(answers.len(), expected.len());
    for (answer, (code, reason, retry)) in answers.iter().zip(expected) {
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(answer["reason"], reason, "{answer}");
        assert_eq!(answer["domain"], "userimport", "{answer}");
        assert_eq!(
            answer.get("retry_delay_ms").is_some(),
            retry,
            "RetryInfo only where a retry may help: {answer}"
        );
    }
    assert_eq!(answers[3]["fields"], serde_json::json!(["company.name"]));
    assert_eq!(answers[4]["fields"], serde_json::json!(["page_token"]));
    assert_eq!(answers[4]["metadata"]["field"], "page_token");
    // A defect's message says nothing of it; the server logged it.
    assert_eq!(answers[2]["message"], "internal error");
}
