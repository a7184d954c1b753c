//! A tenant of a million users is served page by page without scanning it.

use std::time::{Duration, Instant};

use graph_emulator::EmulatedUser;

use crate::helpers::TestEmulator;

#[tokio::test]
async fn a_million_user_tenant_serves_listing_and_delta_pages_quickly() {
    let app = TestEmulator::spawn(1_000_000).await;
    let token = app.token().await;
    // Generous bound for unoptimized builds on a loaded 2-core machine.
    let bound = Duration::from_millis(1_500);

    let mut next = "/v1.0/users?$top=999&$select=id,displayName".to_owned();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = app.get(&next, Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(body["value"].as_array().unwrap().len(), 999);
        assert!(
            started.elapsed() < bound,
            "listing page took {:?}",
            started.elapsed()
        );
        next = body["@odata.nextLink"].as_str().unwrap().to_owned();
    }

    let mut next = "/v1.0/users/delta?$select=id,displayName".to_owned();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = app.get(&next, Some(&token)).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < bound,
            "delta page took {:?}",
            started.elapsed()
        );
        next = body["@odata.nextLink"].as_str().unwrap().to_owned();
    }

    let (_, latest) = app
        .get("/v1.0/users/delta?$deltatoken=latest", Some(&token))
        .await;
    app.emulator
        .create_user(EmulatedUser {
            id: "00000000-0000-4000-8000-000000000001".to_owned(),
            user_principal_name: "late.joiner@contoso.com".to_owned(),
            mail: None,
            display_name: "Late Joiner".to_owned(),
            given_name: None,
            surname: None,
            account_enabled: true,
            user_type: "Member".to_owned(),
        })
        .unwrap();
    let started = Instant::now();
    let (status, body) = app
        .get(latest["@odata.deltaLink"].as_str().unwrap(), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert!(
        started.elapsed() < bound,
        "change round took {:?}",
        started.elapsed()
    );
}
