use graph::{Cloud, Error, GraphClient, GraphConfig};
use secrecy::SecretString;

fn config() -> GraphConfig {
    GraphConfig::for_cloud(
        Cloud::Global,
        "8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a",
        "3f2e1d0c-9b8a-4765-8432-10fedcba9876",
        SecretString::from("super-secret-value".to_owned()),
    )
}

#[test]
fn a_page_size_of_zero_or_1000_is_invalid_config() {
    for page_size in [0, 1000] {
        let result = GraphClient::new(GraphConfig {
            page_size,
            ..config()
        });
        assert!(
            matches!(result, Err(Error::InvalidConfig(_))),
            "page_size {page_size}"
        );
    }
    for page_size in [1, 999] {
        assert!(
            GraphClient::new(GraphConfig {
                page_size,
                ..config()
            })
            .is_ok()
        );
    }
}

#[test]
fn a_config_for_a_cloud_uses_its_hosts_and_the_largest_page_size() {
    let config = GraphConfig::for_cloud(Cloud::UsGov, "t", "c", SecretString::from("s".to_owned()));
    assert_eq!(
        config.authority_host.as_str(),
        "https://login.microsoftonline.us/"
    );
    assert_eq!(config.graph_host.as_str(), "https://graph.microsoft.us/");
    assert_eq!(config.scope, "https://graph.microsoft.us/.default");
    assert_eq!(config.page_size, 999);
}

#[test]
fn a_scope_that_is_not_one_resource_with_default_is_invalid_config() {
    for scope in [
        "",
        "https://graph.microsoft.com",
        "/.default",
        "a/.default b/.default",
    ] {
        let result = GraphClient::new(GraphConfig {
            scope: scope.to_owned(),
            ..config()
        });
        assert!(
            matches!(result, Err(Error::InvalidConfig(_))),
            "scope {scope:?}"
        );
    }
}

#[test]
fn debug_of_the_config_and_the_client_hides_the_secret() {
    let config = config();
    assert!(!format!("{config:?}").contains("super-secret-value"));
    let client = GraphClient::new(config).unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains("super-secret-value"), "{debug}");
    assert!(debug.contains("8b5a3c1e-2f4d-4c6b-9a7e-0d1f2e3c4b5a"));
}

#[test]
fn an_empty_tenant_or_a_non_http_host_is_invalid_config() {
    let empty_tenant = GraphConfig {
        tenant_id: " ".to_owned(),
        ..config()
    };
    assert!(matches!(
        GraphClient::new(empty_tenant),
        Err(Error::InvalidConfig(_))
    ));
    let ftp_host = GraphConfig {
        graph_host: "ftp://graph.microsoft.com".parse().unwrap(),
        ..config()
    };
    assert!(matches!(
        GraphClient::new(ftp_host),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn a_certificate_config_needs_no_secret_and_debug_never_shows_the_key() {
    let certificate = graph::ClientCertificate::from_pem(
        crate::helpers::APP_CERT,
        &SecretString::from(crate::helpers::APP_KEY.to_owned()),
    )
    .unwrap();
    let config = GraphConfig::with_certificate(Cloud::Global, "t", "c", certificate);
    let debug = format!("{config:?}");
    assert!(debug.contains("x5t#S256"), "{debug}");
    assert!(!debug.contains("MII"), "{debug}");
    assert!(GraphClient::new(config).is_ok());
}

#[test]
fn zero_attempts_zero_concurrency_or_a_zero_budget_window_is_invalid_config() {
    let mut no_attempts = config();
    no_attempts.retry.max_attempts = 0;
    let mut no_concurrency = config();
    no_concurrency.max_concurrency = 0;
    let mut no_window = config();
    no_window.resource_budget = graph::ResourceBudget {
        units: 10,
        window: std::time::Duration::ZERO,
    };
    for config in [no_attempts, no_concurrency, no_window] {
        assert!(matches!(
            GraphClient::new(config),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn the_defaults_are_conservative() {
    let config = config();
    assert_eq!(config.resource_budget, graph::ResourceBudget::SMALL_TENANT);
    assert_eq!(config.resource_budget.units, 3_500);
    assert_eq!(config.max_concurrency, graph::DEFAULT_MAX_CONCURRENCY);
    assert_eq!(config.retry, graph::RetryPolicy::default());
    assert_eq!(config.retry.max_attempts, 5);
}
