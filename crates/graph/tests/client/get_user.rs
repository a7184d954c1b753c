use graph_emulator::EmulatorConfig;

use crate::helpers::{client_for, start_emulator};

#[tokio::test]
async fn get_user_finds_a_member_by_id() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let member = emulator.users()[0].clone();
    let user = client_for(&emulator)
        .get_user(&member.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id, member.id);
    assert_eq!(user.user_principal_name, member.user_principal_name);
    assert_eq!(user.user_type.as_deref(), Some("Member"));
    assert_eq!(user.account_enabled, Some(true));
}

#[tokio::test]
async fn get_user_finds_a_guest_by_a_user_principal_name_containing_ext() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let upn = "jane_fabrikam.com#EXT#@contoso.com";
    let user = client_for(&emulator).get_user(upn).await.unwrap().unwrap();
    assert_eq!(user.user_principal_name, upn);
    assert_eq!(user.user_type.as_deref(), Some("Guest"));
    let request = emulator.requests().pop().unwrap();
    assert!(
        request
            .path_and_query
            .starts_with("/v1.0/users/jane_fabrikam.com%23EXT%23@contoso.com?$select="),
        "{request:?}"
    );
}

#[tokio::test]
async fn get_user_returns_none_for_an_unknown_id() {
    let emulator = start_emulator(EmulatorConfig::synthetic(10)).await;
    let user = client_for(&emulator)
        .get_user("00000000-0000-4000-8000-000000000000")
        .await
        .unwrap();
    assert_eq!(user, None);
    assert_eq!(emulator.requests().pop().unwrap().status, 404);
}
