use std::process::{Command, Output};

use crate::helpers::EndToEnd;

fn userimport(e2e: &EndToEnd, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userimport"))
        .args(args)
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

test_support::on_both_backends! {
    async fn the_cli_lists_imports_by_upn_and_prints_json_and_csv(db) {
        let e2e = EndToEnd::start(&db, 40).await;
        let tenant = e2e.tenant();
        let listed = stdout(&userimport(&e2e, &["directory", "list", "--limit", "100", "--output", "csv"]));
        let mut lines = listed.lines();
        assert_eq!(lines.next().unwrap(), "OBJECT ID,DISPLAY NAME,USER PRINCIPAL NAME,MAIL,TYPE,ENABLED,IMPORTED");
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

    async fn the_cli_names_an_unknown_upn_and_fails(db) {
        let e2e = EndToEnd::start(&db, 5).await;
        let output = userimport(&e2e, &["import", "nobody@contoso.com"]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("nobody@contoso.com"), "{stderr}");
    }
}
