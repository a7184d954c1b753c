//! Issue 14: README's table of what each service identity may call is the services' own
//! access tables, so least privilege can be read (and reviewed) in one place.

use std::collections::BTreeMap;

use service_runtime::auth::AccessRules;

/// (identity, service called) → RPC names, as README states them.
type Table = BTreeMap<(String, String), Vec<String>>;

fn from_code() -> Table {
    let services: [(&str, AccessRules); 3] = [
        ("directory-sync", directory_sync::grpc::ACCESS),
        ("import-worker", import_worker::grpc::ACCESS),
        ("user-registry", user_registry::grpc::ACCESS),
    ];
    let mut table = Table::new();
    for (service, rules) in services {
        for (path, roles) in rules {
            let method = path.rsplit('/').next().unwrap().to_owned();
            for role in roles
                .iter()
                .filter(|r| r.starts_with("userimport.service."))
            {
                table
                    .entry(((*role).to_owned(), service.to_owned()))
                    .or_default()
                    .push(method.clone());
            }
        }
    }
    table.values_mut().for_each(|methods| methods.sort());
    table
}

fn from_readme() -> Table {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let (_, rest) = readme.split_once("<!-- service-access:begin -->").unwrap();
    let (section, _) = rest.split_once("<!-- service-access:end -->").unwrap();
    let mut table = Table::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let identity = cells[0].trim_matches('`').to_owned();
        let mut methods: Vec<String> = cells[2]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_owned())
            .collect();
        methods.sort();
        table.insert((identity, cells[1].to_owned()), methods);
    }
    table
}

#[test]
fn the_readme_access_table_is_the_services_access_tables() {
    let code = from_code();
    assert!(!code.is_empty());
    assert_eq!(
        from_readme(),
        code,
        "README's service-access table differs from the code"
    );
}
