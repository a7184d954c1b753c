//! Groups and their transitive members on the wire.

use graph_emulator::{EmulatorConfig, SYNTHETIC_GROUP_IDS};

use crate::helpers::{TestEmulator, assert_graph_error};

#[tokio::test]
async fn transitive_members_carry_their_odata_type_and_flatten_nested_groups() {
    let app = TestEmulator::spawn_with(EmulatorConfig::synthetic_with_groups(20)).await;
    let token = app.token().await;
    let path = format!(
        "/v1.0/groups/{}/transitiveMembers?$select=id,displayName,userPrincipalName",
        SYNTHETIC_GROUP_IDS[1]
    );
    let (status, body) = app.get(&path, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let members = body["value"].as_array().unwrap();
    let types: Vec<&str> = members
        .iter()
        .map(|m| m["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "#microsoft.graph.user")
            .count(),
        15
    );
    for other in [
        "#microsoft.graph.group",
        "#microsoft.graph.device",
        "#microsoft.graph.orgContact",
        "#microsoft.graph.servicePrincipal",
    ] {
        assert_eq!(types.iter().filter(|t| **t == other).count(), 1, "{other}");
    }
    let device = members
        .iter()
        .find(|m| m["@odata.type"] == "#microsoft.graph.device")
        .unwrap();
    assert!(device.get("userPrincipalName").is_none());
    assert_eq!(device["displayName"], "Build Agent 01");
}

#[tokio::test]
async fn a_group_is_read_and_an_unknown_group_answers_404() {
    let app = TestEmulator::spawn_with(EmulatorConfig::synthetic_with_groups(5)).await;
    let token = app.token().await;
    let (status, body) = app
        .get(
            &format!("/v1.0/groups/{}", SYNTHETIC_GROUP_IDS[0]),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["displayName"], "All Staff");
    for path in [
        "/v1.0/groups/00000000-0000-4000-8000-000000000000",
        "/v1.0/groups/00000000-0000-4000-8000-000000000000/transitiveMembers",
    ] {
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!(status, 404, "{path}");
        assert_graph_error(&body, "Request_ResourceNotFound");
    }
}

#[tokio::test]
async fn hard_deleted_users_leave_their_groups_and_soft_deleted_ones_are_not_listed() {
    let app = TestEmulator::spawn_with(EmulatorConfig::synthetic_with_groups(20)).await;
    let token = app.token().await;
    let users = app.emulator.users();
    app.emulator.hard_delete_user(&users[0].id).unwrap();
    app.emulator.soft_delete_user(&users[2].id).unwrap();
    let path = format!("/v1.0/groups/{}/transitiveMembers", SYNTHETIC_GROUP_IDS[0]);
    let (_, body) = app.get(&path, Some(&token)).await;
    let ids: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&users[0].id.as_str()));
    assert!(!ids.contains(&users[2].id.as_str()));
    assert_eq!(ids.len(), 8);
    let all_staff = &app.emulator.groups()[0];
    assert_eq!(
        all_staff.members.len(),
        9,
        "the hard-deleted user left, the soft-deleted stays"
    );
}
