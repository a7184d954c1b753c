//! The mutation API and its change log.

use graph_emulator::{ChangeKind, EmulatedUser, EmulatorConfig, UserUpdate};

use crate::helpers::TestEmulator;

fn user(id: &str, upn: &str) -> EmulatedUser {
    EmulatedUser {
        id: id.to_owned(),
        user_principal_name: upn.to_owned(),
        mail: None,
        display_name: "New".to_owned(),
        given_name: None,
        surname: None,
        account_enabled: true,
        user_type: "Member".to_owned(),
    }
}

#[tokio::test]
async fn each_mutation_is_logged_with_the_next_sequence_number() {
    let app = TestEmulator::spawn_with(EmulatorConfig::synthetic(3)).await;
    let emulator = &app.emulator;
    let id = emulator.users()[0].id.clone();
    let new_id = "00000000-0000-4000-8000-000000000099";

    assert_eq!(
        emulator
            .create_user(user(new_id, "new@contoso.com"))
            .unwrap(),
        1
    );
    let disable = UserUpdate {
        account_enabled: Some(false),
        ..UserUpdate::default()
    };
    assert_eq!(emulator.update_user(&id, disable).unwrap(), 2);
    assert_eq!(emulator.soft_delete_user(&id).unwrap(), 3);
    assert_eq!(emulator.deleted_users().len(), 1);
    assert_eq!(emulator.restore_user(&id).unwrap(), 4);
    assert_eq!(emulator.hard_delete_user(new_id).unwrap(), 5);

    let kinds: Vec<ChangeKind> = emulator.changes().iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::SoftDeleted,
            ChangeKind::Restored,
            ChangeKind::HardDeleted
        ]
    );
    assert_eq!(emulator.users().len(), 3);
    assert!(!emulator.users()[0].account_enabled);
}

#[tokio::test]
async fn invalid_mutations_are_refused_and_not_logged() {
    let app = TestEmulator::spawn(2).await;
    let emulator = &app.emulator;
    let users = emulator.users();
    let taken = UserUpdate {
        user_principal_name: Some(users[1].user_principal_name.to_uppercase()),
        ..UserUpdate::default()
    };
    assert!(emulator.update_user(&users[0].id, taken).is_err());
    assert!(
        emulator
            .create_user(user(&users[0].id, "x@contoso.com"))
            .is_err()
    );
    assert!(emulator.restore_user(&users[0].id).is_err());
    assert!(emulator.soft_delete_user("unknown").is_err());
    assert!(emulator.changes().is_empty());
}

#[tokio::test]
async fn soft_deleted_users_are_not_served_and_restored_ones_are() {
    let app = TestEmulator::spawn(3).await;
    let token = app.token().await;
    let id = app.emulator.users()[1].id.clone();
    app.emulator.soft_delete_user(&id).unwrap();
    assert_eq!(
        app.get(&format!("/v1.0/users/{id}"), Some(&token)).await.0,
        404
    );
    let (_, body) = app.get("/v1.0/users", Some(&token)).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    app.emulator.restore_user(&id).unwrap();
    assert_eq!(
        app.get(&format!("/v1.0/users/{id}"), Some(&token)).await.0,
        200
    );
}
