use std::process::{Command, Output};

use crate::helpers::EndToEnd;

/// The CLI profile of this stack's tests (one per stack: its registry's port names it), so
/// no developer's own current company leaks in.
fn profile(e2e: &EndToEnd) -> std::path::PathBuf {
    let port = e2e
        .stack
        .registry_url
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    std::env::temp_dir().join(format!("userimport-test-profile-{port}.json"))
}

fn userimport(e2e: &EndToEnd, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userimport"))
        .args(args)
        .env("USERIMPORT_PROFILE", profile(e2e))
        .env_remove("USERIMPORT_COMPANY")
        .env("USERIMPORT_DIRECTORY_URL", &e2e.stack.directory_url)
        .env("USERIMPORT_REGISTRY_URL", &e2e.stack.registry_url)
        .env("USERIMPORT_IMPORTER_URL", &e2e.stack.importer_url)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&stdout(output))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn actions(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut actions: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    actions.sort();
    actions
}

test_support::on_both_backends! {
    async fn the_cli_previews_then_applies_rules_sync_rounds_and_batch_imports(db) {
        const GROUP: &str = "6a1e0000-0000-4000-8000-0000000000b2";
        let tenant = graph_emulator::EmulatorConfig::synthetic(30).users;
        let members: Vec<usize> = (0..tenant.len()).filter(|&i| tenant[i].user_type == "Member" && tenant[i].account_enabled).take(4).collect();
        let setup = crate::helpers::Setup { groups: vec![(GROUP.to_owned(), members.clone())], ..Default::default() };
        let e2e = EndToEnd::start_configured(&db, 30, setup).await;
        let mut args = vec!["import", "-o", "json"];
        args.extend(members.iter().map(|&i| tenant[i].id.as_str()));
        let ids: Vec<String> = json(&userimport(&e2e, &args)).iter().map(|o| o["user_id"].as_str().unwrap().to_owned()).collect();
        let granted_to_all: Vec<(String, String)> = ids.iter().map(|id| ("grant".to_owned(), id.clone())).collect();

        let add = ["rules", "add", "--group", GROUP, "--role", "ACCOUNTANT", "--company", "USMF", "-o", "json"];
        let preview = json(&userimport(&e2e, &[&add[..], &["--dry-run"]].concat()));
        assert_eq!(actions(&preview), granted_to_all, "the dry run lists the grants");
        assert!(json(&userimport(&e2e, &["rules", "list", "-o", "json"])).is_empty(), "and stores no rule");
        assert_eq!(actions(&json(&userimport(&e2e, &add))), granted_to_all, "the rule then makes exactly those");
        let rules = json(&userimport(&e2e, &["rules", "list", "-o", "json"]));
        let rule_id = rules[0]["rule_id"].as_str().unwrap().to_owned();

        // A directory change previewed by a dry-run round, then approved.
        e2e.stack.emulator.as_ref().unwrap().update_user(&tenant[members[1]].id, graph_emulator::UserUpdate { account_enabled: Some(false), ..Default::default() }).unwrap();
        let dry = userimport(&e2e, &["sync", "now", "--delta", "--dry-run", "-o", "json"]);
        assert_eq!(actions(&json(&dry)), [("disable".to_owned(), ids[1].clone())]);
        assert!(json(&userimport(&e2e, &["users", "list", "--disabled", "-o", "json"])).is_empty(), "nothing written");
        let hint = String::from_utf8_lossy(&dry.stderr).to_string();
        let run_id = hint.split("userimport sync approve ").nth(1).and_then(|rest| rest.split('`').next()).unwrap_or_else(|| panic!("{hint}")).to_owned();
        stdout(&userimport(&e2e, &["sync", "approve", &run_id]));
        let disabled = json(&userimport(&e2e, &["users", "list", "--disabled", "-o", "json"]));
        assert_eq!(disabled.iter().map(|u| u["user_id"].as_str().unwrap()).collect::<Vec<_>>(), [ids[1].as_str()]);

        // Removing the rule: previewed, then done.
        let revoked_from_all: Vec<(String, String)> = ids.iter().map(|id| ("revoke".to_owned(), id.clone())).collect();
        assert_eq!(actions(&json(&userimport(&e2e, &["rules", "remove", &rule_id, "--dry-run", "-o", "json"]))), revoked_from_all);
        assert_eq!(json(&userimport(&e2e, &["rules", "list", "-o", "json"])).len(), 1);
        assert_eq!(actions(&json(&userimport(&e2e, &["rules", "remove", &rule_id, "-o", "json"]))), revoked_from_all);
        assert!(json(&userimport(&e2e, &["rules", "list", "-o", "json"])).is_empty());

        // A batch import previewed: everyone in scope (with sync.groups set, the synced
        // group's 4 members, imported already), and no job.
        let batch = json(&userimport(&e2e, &["batch", "start", "--dry-run", "-o", "json"]));
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.iter().filter(|o| o["outcome"] == "already present").count(), 4);
        assert!(json(&userimport(&e2e, &["jobs", "list", "-o", "json"])).iter().all(|j| j["kind"] != "batch"), "no batch job");
        assert_eq!(json(&userimport(&e2e, &["users", "list", "-o", "json"])).len(), 4);
    }

    async fn after_an_import_the_cli_grants_roles_renames_disables_and_shows_the_audit_trail(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let tenant = e2e.tenant();
        let members: Vec<&str> = tenant.iter().filter(|u| u.user_type == "Member").take(3).map(|u| u.id.as_str()).collect();
        let mut args = vec!["import", "--company", "DAT", "-o", "json"];
        args.extend(&members);
        let imported: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &args))).unwrap();
        let ids: Vec<String> = imported.as_array().unwrap().iter().map(|o| o["user_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 3);

        let without = |e2e: &EndToEnd| -> Vec<String> {
            let listed: serde_json::Value = serde_json::from_str(&stdout(&userimport(e2e, &["users", "list", "--without-roles", "-o", "json"]))).unwrap();
            listed.as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(without(&e2e).len(), 3);

        let roles = stdout(&userimport(&e2e, &["roles", "list", "-o", "csv"]));
        assert_eq!(roles.lines().next().unwrap(), "ROLE,NAME,GRANTED,DESCRIPTION");
        assert!(roles.contains("SYSADMIN,System administrator,all companies,"), "{roles}");

        let granted = stdout(&userimport(&e2e, &["users", "assign-roles", &ids[0], &ids[1], "--role", "accountant", "--company", "dat", "-o", "json"]));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&granted).unwrap(), serde_json::json!({"granted": 2}));
        assert_eq!(without(&e2e), [ids[2].clone()]);
        let revoked = stdout(&userimport(&e2e, &["users", "revoke-roles", &ids[1], "--role", "ACCOUNTANT", "-o", "json"]));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&revoked).unwrap(), serde_json::json!({"revoked": 1}));

        let renamed: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["users", "rename", &ids[0], "renamed.one", "-o", "json"]))).unwrap();
        assert_eq!(renamed[0]["user_id"], "renamed.one");
        assert_eq!(renamed[0]["object_id"], members[0]);
        let disabled: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["users", "disable", "renamed.one", "-o", "json"]))).unwrap();
        assert_eq!(disabled[0]["enabled"], false);

        let trail = stdout(&userimport(&e2e, &["audit", "list", "--user", "renamed.one", "-o", "csv"]));
        let mut lines = trail.lines();
        assert_eq!(lines.next().unwrap(), "EVENT,AT,ACTOR,ACTION,USER ID,VIA,DETAIL,SERVICE");
        let actions: Vec<(String, String)> = lines.map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[2].to_owned(), cells[3].to_owned())
        }).collect();
        let expected = [("admin", "disable"), ("admin", "rename"), ("admin", "role.grant"), ("admin", "import")];
        assert_eq!(actions, expected.map(|(a, b)| (a.to_owned(), b.to_owned())), "{trail}");

        let failed = userimport(&e2e, &["users", "assign-roles", "nobody", "--role", "ACCOUNTANT"]);
        assert!(!failed.status.success());
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(stderr.contains("NotFound") && stderr.contains("nobody"), "{stderr}");
    }

    async fn the_cli_lists_imports_by_upn_and_prints_json_and_csv(db) {
        let e2e = EndToEnd::start(&db, 40).await;
        let tenant = e2e.tenant();
        let listed = stdout(&userimport(&e2e, &["directory", "list", "--limit", "100", "--output", "csv"]));
        let mut lines = listed.lines();
        assert_eq!(lines.next().unwrap(), "OBJECT ID,DISPLAY NAME,USER PRINCIPAL NAME,MAIL,TYPE,ENABLED,IMPORTED,SOURCE");
        assert_eq!(lines.count(), 40);

        let upn = tenant[1].user_principal_name.clone();
        let imported = stdout(&userimport(&e2e, &["import", &upn, &tenant[2].id, "--company", "DAT", "-o", "json"]));
        let outcomes: serde_json::Value = serde_json::from_str(&imported).unwrap();
        assert_eq!(outcomes.as_array().unwrap().len(), 2);
        assert_eq!(outcomes[0]["object_id"], tenant[1].id.as_str());
        assert_eq!(outcomes[0]["outcome"], "created");

        let users = stdout(&userimport(&e2e, &["users", "list", "-o", "json"]));
        let users: serde_json::Value = serde_json::from_str(&users).unwrap();
        assert_eq!(users.as_array().unwrap().len(), 2);

        let remaining = stdout(&userimport(&e2e, &["directory", "list", "--limit", "100", "-o", "json"]));
        let remaining: serde_json::Value = serde_json::from_str(&remaining).unwrap();
        assert_eq!(remaining.as_array().unwrap().len(), 38);
    }

    async fn a_batch_import_from_the_cli_runs_on_the_embedded_queue_and_reports_what_it_did_not_create(db) {
        let e2e = EndToEnd::start(&db, 500).await;
        let guests_without_mail = e2e.tenant().iter().filter(|u| u.user_type == "Guest" && u.mail.is_none()).count() as u64;
        assert!(guests_without_mail > 0, "the synthetic tenant has guests without mail");

        let args = ["batch", "start", "--company", "DAT", "--monitoring-category", "e2e", "--wait", "-o", "json"];
        let ended: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &args))).unwrap();
        let job = &ended[0];
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["created_by"], "admin");
        assert_eq!(job["planned"], 500);
        assert_eq!(job["skipped"], guests_without_mail);
        assert_eq!(job["created"], 500 - guests_without_mail);
        assert_eq!(job["chunks"], "10/10", "500 users in chunks of 50");
        assert_eq!(e2e.registry_users().await.len() as u64, 500 - guests_without_mail);

        let job_id = job["job_id"].as_str().unwrap();
        let report = stdout(&userimport(&e2e, &["jobs", "outcomes", job_id, "-o", "csv"]));
        let mut lines = report.lines();
        assert_eq!(lines.next().unwrap(), "OBJECT ID,SIGN-IN NAME,NAME,OUTCOME,USER ID,REASON");
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len() as u64, guests_without_mail);
        assert!(rows.iter().all(|row| row.contains(",skipped,") && row.contains("mail")), "{report}");
        assert!(rows.iter().all(|row| row.contains("#EXT#")), "each guest named by its UPN: {report}");
        let shown = userimport(&e2e, &["jobs", "show", job_id]);
        let said = String::from_utf8_lossy(&shown.stdout).to_string();
        assert!(said.contains("started ") && said.contains("finished ") && said.contains("took "), "{said}");

        let listed: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["jobs", "list", "-o", "json"]))).unwrap();
        assert_eq!(listed[0]["job_id"], job_id);

        // The same import again creates nothing and finds every user present.
        let again: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &args))).unwrap();
        assert_eq!(again[0]["created"], 0);
        assert_eq!(again[0]["already_present"], 500 - guests_without_mail);
        assert_eq!(e2e.registry_users().await.len() as u64, 500 - guests_without_mail);
    }

    async fn a_job_id_the_worker_does_not_know_is_named_in_the_error(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        let output = userimport(&e2e, &["jobs", "show", "no-such-job"]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no-such-job"), "{stderr}");
    }

    async fn an_unknown_user_among_many_is_that_users_outcome_and_all_or_nothing_imports_nobody(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let tenant = e2e.tenant();
        let member = tenant.iter().find(|u| u.user_type == "Member").unwrap();
        let guest = tenant.iter().find(|u| u.user_type == "Guest" && u.mail.is_some()).unwrap();
        let mail = guest.mail.clone().unwrap();

        let refused = userimport(&e2e, &["import", "--all-or-nothing", &member.user_principal_name, "nobody@contoso.com"]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("nobody@contoso.com"));
        assert!(e2e.registry_users().await.is_empty(), "nothing imported");

        let unknown_id = "00000000-0000-4000-8000-00000000abcd";
        let rows = json(&userimport(&e2e, &["import", "-o", "json", &member.user_principal_name, "nobody@contoso.com", &mail, unknown_id]));
        let outcomes: Vec<(&str, &str)> = rows.iter().map(|r| (r["outcome"].as_str().unwrap(), r["reason"].as_str().unwrap())).collect();
        assert_eq!(outcomes[0].0, "created", "by UPN: {outcomes:?}");
        assert_eq!(outcomes[1].0, "skipped");
        assert!(outcomes[1].1.contains("nobody@contoso.com"), "{outcomes:?}");
        assert_eq!(outcomes[2].0, "created", "a guest by its mail: {outcomes:?}");
        assert_eq!(outcomes[3], ("skipped", "not in the directory: no user has this object id"));
        assert_eq!(e2e.registry_users().await.len(), 2);
    }

    async fn the_cli_exits_non_zero_when_the_round_fails(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let emulator = e2e.stack.emulator.as_ref().unwrap();
        // Graph refuses to list users: the round fails (a refusal is not retried).
        emulator.inject(graph_emulator::Fault::status("/v1.0/users", 403, 1000));
        let output = userimport(&e2e, &["sync", "now"]);
        assert!(!output.status.success(), "a failed round fails the command");
        let printed = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(printed.contains("full sync FAILED"), "{printed}");
        assert!(stderr.contains("failed"), "{stderr}");
        let run_id = printed.split("sync run ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_else(|| panic!("{printed}")).to_owned();
        assert!(stderr.contains(&run_id), "the error names the run: {stderr}");
        let status = stdout(&userimport(&e2e, &["sync", "status"]));
        assert!(status.contains(&format!("last run {run_id}: full sync FAILED")), "{status}");

        // A round that succeeds exits 0; the status names it, with a duration that is not negative.
        emulator.clear_faults();
        let done = stdout(&userimport(&e2e, &["directory", "sync", "--delta"]));
        assert!(done.contains("delta sync succeeded"), "{done}");
        let status = stdout(&userimport(&e2e, &["directory", "status"]));
        assert!(status.contains("last run ") && status.contains("delta sync succeeded"), "{status}");
        assert!(!status.contains(" -"), "no negative duration: {status}");

        // A dry run waits for approval: not a failure; the command says how to approve it.
        let dry = userimport(&e2e, &["sync", "now", "--delta", "--dry-run"]);
        assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
        let printed = String::from_utf8_lossy(&dry.stdout);
        assert!(printed.contains("nothing would change") || printed.contains("userimport sync approve"), "{printed}");
    }
}

test_support::on_both_backends! {
    async fn users_show_finds_a_user_by_id_sign_in_name_or_object_id_with_its_roles_and_their_sources(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let tenant = e2e.tenant();
        let member = tenant.iter().find(|u| u.user_type == "Member").unwrap();
        let imported = json(&userimport(&e2e, &["import", "-o", "json", &member.id]));
        let user_id = imported[0]["user_id"].as_str().unwrap().to_owned();
        stdout(&userimport(&e2e, &["users", "assign-roles", &user_id, "--role", "ACCOUNTANT", "--company", "USMF"]));

        for key in [user_id.as_str(), member.user_principal_name.as_str(), member.id.as_str()] {
            let shown: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["users", "show", key, "-o", "json"]))).unwrap();
            assert_eq!(shown["user_id"], user_id.as_str(), "found by {key}");
            assert_eq!(shown["object_id"], member.id.as_str());
            assert_eq!(shown["alias"], member.user_principal_name.as_str());
            assert_eq!(shown["company"], "DAT");
            assert_eq!(shown["account_type"], "member");
            assert!(!shown["created_by_import"].as_str().unwrap().is_empty(), "the import that created it");
            assert_eq!(shown["directory_state"], "present, enabled");
            assert_eq!(shown["roles"], serde_json::json!([{"role_id": "ACCOUNTANT", "company": "USMF", "sources": ["manual"]}]));
        }
        let table = stdout(&userimport(&e2e, &["users", "show", &user_id]));
        assert!(table.contains("Object ID") && table.contains("ACCOUNTANT") && table.contains("from manual"), "{table}");

        let unknown = userimport(&e2e, &["users", "show", "nobody.here@contoso.com"]);
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user signing in as nobody.here@contoso.com"));
    }
}

test_support::on_both_backends! {
    async fn company_use_sets_the_current_company_that_imports_use_and_say_they_used(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let _ = std::fs::remove_file(profile(&e2e));
        let shown = stdout(&userimport(&e2e, &["company"]));
        assert!(shown.starts_with("company DAT (the default"), "{shown}");

        let unknown = userimport(&e2e, &["company", "use", "zzz"]);
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("company ZZZ does not exist"));

        stdout(&userimport(&e2e, &["company", "use", "usmf"]));
        let shown = stdout(&userimport(&e2e, &["company"]));
        assert!(shown.starts_with("company USMF (your current company"), "{shown}");

        let members: Vec<_> = e2e.tenant().into_iter().filter(|u| u.user_type == "Member").take(2).collect();
        let used = userimport(&e2e, &["import", "-o", "json", &members[0].id]);
        assert!(String::from_utf8_lossy(&used.stderr).contains("company USMF (your current company"), "{used:?}");
        let given = userimport(&e2e, &["import", "-o", "json", "--company", "DAT", &members[1].id]);
        assert!(String::from_utf8_lossy(&given.stderr).contains("company DAT"));
        let users = e2e.registry_users().await;
        let company_of = |object_id: &str| users.iter().find(|u| u.object_id == object_id).unwrap().company.clone();
        assert_eq!(company_of(&members[0].id), "USMF", "the current company");
        assert_eq!(company_of(&members[1].id), "DAT", "--company wins");
        let _ = std::fs::remove_file(profile(&e2e));
    }
}

test_support::on_both_backends! {
    async fn a_listing_says_when_it_is_not_complete_and_exports_are_complete_by_default(db) {
        let e2e = EndToEnd::start(&db, 80).await;
        let table = userimport(&e2e, &["directory", "list", "--all"]);
        let said = String::from_utf8_lossy(&table.stdout).to_string();
        assert!(said.contains("the first 50 users shown; more match"), "{said}");

        let csv = stdout(&userimport(&e2e, &["directory", "list", "--all", "-o", "csv"]));
        assert_eq!(csv.lines().count(), 1 + 80, "a header and every user");
        let stderr = String::from_utf8_lossy(&userimport(&e2e, &["directory", "list", "--all", "-o", "csv"]).stderr).to_string();
        assert!(stderr.contains("80 users"), "{stderr}");

        let limited = userimport(&e2e, &["directory", "list", "--all", "--limit", "80"]);
        let said = String::from_utf8_lossy(&limited.stdout).to_string();
        assert!(said.trim_end().ends_with("80 users"), "exactly the limit is complete: {said}");
    }
}

test_support::on_both_backends! {
    async fn dev_tenant_changes_the_emulated_tenant_and_the_next_round_keeps_the_registry_in_step(db) {
        let e2e = EndToEnd::start(&db, 20).await;
        let emulator_url = e2e.stack.emulator.as_ref().unwrap().base_url().to_string();
        std::fs::write(profile(&e2e), serde_json::json!({ "dev_emulator_url": emulator_url }).to_string()).unwrap();

        let added = stdout(&userimport(&e2e, &["dev", "tenant", "add", "zoe.new@contoso.com", "--name", "Zoe New"]));
        assert!(added.starts_with("added zoe.new@contoso.com"), "{added}");
        stdout(&userimport(&e2e, &["sync", "now", "--delta"]));
        let listed = json(&userimport(&e2e, &["directory", "list", "--search", "zoe.new", "-o", "json"]));
        assert_eq!(listed.len(), 1, "the new user is listed for import: {listed:?}");
        let object_id = listed[0]["object_id"].as_str().unwrap().to_owned();
        let imported = json(&userimport(&e2e, &["import", "-o", "json", &object_id]));
        let user_id = imported[0]["user_id"].as_str().unwrap().to_owned();
        // The rest of the tenant too, so one disable stays under the safety share.
        let rest: Vec<String> = json(&userimport(&e2e, &["directory", "list", "-o", "json"])).iter().map(|u| u["object_id"].as_str().unwrap().to_owned()).collect();
        let mut args = vec!["import", "-o", "json"];
        args.extend(rest.iter().map(String::as_str));
        stdout(&userimport(&e2e, &args));

        stdout(&userimport(&e2e, &["dev", "tenant", "disable", "zoe.new@contoso.com"]));
        stdout(&userimport(&e2e, &["dev", "tenant", "rename", &object_id, "--name", "Zoe Renamed"]));
        stdout(&userimport(&e2e, &["sync", "now", "--delta"]));
        let shown: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["users", "show", &user_id, "-o", "json"]))).unwrap();
        assert_eq!(shown["enabled"], false, "disabled in the tenant, disabled in the registry");
        assert_eq!(shown["name"], "Zoe Renamed");

        stdout(&userimport(&e2e, &["dev", "tenant", "delete", &object_id]));
        stdout(&userimport(&e2e, &["sync", "now", "--delta"]));
        let shown: serde_json::Value = serde_json::from_str(&stdout(&userimport(&e2e, &["users", "show", &user_id, "-o", "json"]))).unwrap();
        assert!(shown["directory_state"].as_str().unwrap().starts_with("soft-deleted"), "{shown}");

        let runs = json(&userimport(&e2e, &["sync", "runs", "-o", "json"]));
        assert!(runs.len() >= 4, "the start-up round and three delta rounds: {runs:?}");
        assert!(runs[0]["summary"].as_str().unwrap().starts_with("delta sync succeeded"), "newest first: {runs:?}");

        let unknown = userimport(&e2e, &["dev", "tenant", "restore", "nobody@contoso.com"]);
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user \"nobody@contoso.com\""));
        let _ = std::fs::remove_file(profile(&e2e));
    }
}

test_support::on_both_backends! {
    async fn the_in_process_stack_serves_any_batch_group_a_job_names(db) {
        let e2e = EndToEnd::start(&db, 30).await;
        let started = userimport(&e2e, &["batch", "start", "--batch-group", "nightly", "--wait", "-o", "json"]);
        let stderr = String::from_utf8_lossy(&started.stderr).to_string();
        assert!(!stderr.contains("no worker serves"), "{stderr}");
        let rows = json(&started);
        assert_eq!(rows[0]["status"], "completed", "{rows:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_names_one_of_the_people_dev_knows_and_a_private_job_is_theirs_alone() {
    use secrecy::ExposeSecret as _;
    test_support::init();
    let dir = tempfile::tempdir().unwrap();
    let tokens = cli::stack::LocalTokens::generate().unwrap();
    // Where `userimport dev` leaves its people's tokens.
    std::fs::create_dir_all(dir.path().join(".userimport")).unwrap();
    std::fs::write(
        dir.path().join(".userimport/admin.token"),
        tokens.admin.expose_secret(),
    )
    .unwrap();
    for (name, _, secret) in &tokens.people {
        std::fs::write(
            dir.path().join(format!(".userimport/{name}.token")),
            secret.expose_secret(),
        )
        .unwrap();
    }
    let stack = cli::stack::Stack::start(cli::stack::StackOptions {
        storage: cli::stack::Storage::Sqlite(dir.path().join("data")),
        directory: cli::stack::DirectorySource::Emulator { users: 10 },
        ports: cli::stack::Ports::ANY,
        companies: Vec::new(),
        chunk_size: 50,
        auth: cli::stack::StackAuth::Local(tokens),
        auto_import: false,
        sync_groups: Vec::new(),
        delta_interval_secs: 0,
        console: None,
    })
    .await
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_userimport"))
            .args(args)
            .current_dir(dir.path())
            .env("USERIMPORT_DIRECTORY_URL", &stack.directory_url)
            .env("USERIMPORT_REGISTRY_URL", &stack.registry_url)
            .env("USERIMPORT_IMPORTER_URL", &stack.importer_url)
            .env("USERIMPORT_PROFILE", dir.path().join("profile.json"))
            .env_remove("USERIMPORT_TOKEN")
            .env_remove("USERIMPORT_TOKEN_FILE")
            .output()
            .unwrap()
    };
    stdout(&run(&["sync", "now"]));
    let started = serde_json::from_str::<serde_json::Value>(&stdout(&run(&[
        "--as",
        "alice",
        "batch",
        "start",
        "--private",
        "-o",
        "json",
    ])))
    .unwrap();
    let job_id = started[0]["job_id"].as_str().unwrap().to_owned();
    let listed = |who: &str| {
        serde_json::from_str::<serde_json::Value>(&stdout(&run(&[
            "--as", who, "jobs", "list", "-o", "json",
        ])))
        .unwrap()
    };
    assert_eq!(
        listed("alice")[0]["job_id"],
        job_id.as_str(),
        "its creator sees it"
    );
    assert!(
        listed("bob").as_array().unwrap().is_empty(),
        "another administrator does not"
    );
    let refused = run(&["--as", "reader", "companies", "create", "ZZZ"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"));
    stack.stop().await.unwrap();
}
