use std::time::Instant;

use graph_emulator::{SyntheticKind, synthetic_kind, synthetic_users};

#[test]
fn the_synthetic_tenant_contains_every_required_kind_of_user() {
    let users = synthetic_users(100, "contoso.com");
    assert_eq!(users, synthetic_users(100, "contoso.com"));

    let members = users
        .iter()
        .enumerate()
        .filter(|(index, _)| synthetic_kind(*index) == SyntheticKind::Member);
    for (_, member) in members {
        let local = member
            .user_principal_name
            .strip_suffix("@contoso.com")
            .unwrap();
        assert!(local.contains('.'), "{member:?}");
        assert_eq!(member.user_type, "Member");
        assert_eq!(member.mail.as_ref(), Some(&member.user_principal_name));
        assert!(member.account_enabled);
    }
    assert!(users.iter().any(
        |u| u.user_principal_name == "jane_fabrikam.com#EXT#@contoso.com"
            && u.mail.as_deref() == Some("jane@fabrikam.com")
            && u.user_type == "Guest"
    ));
    assert!(users.iter().any(|u| u.user_type == "Guest"
        && u.user_principal_name.contains("#EXT#")
        && u.mail.is_none()));
    assert!(users.iter().any(|u| !u.account_enabled));
    for name in ["Zoë Ångström", "Łukasz Żółć"] {
        assert!(
            users.iter().any(|u| u.display_name == name),
            "{name} missing"
        );
    }
    let users_1000 = synthetic_users(1_000, "contoso.com");
    for name in ["José Núñez", "王明"] {
        assert!(
            users_1000.iter().any(|u| u.display_name == name),
            "{name} missing"
        );
    }
    let smith = users
        .iter()
        .find(|u| u.user_principal_name == "christopher.alexander.smith@contoso.com")
        .unwrap();
    let smyth = users
        .iter()
        .find(|u| u.user_principal_name == "christopher.alexander.smyth@contoso.com")
        .unwrap();
    assert_eq!(
        smith.user_principal_name[..20],
        smyth.user_principal_name[..20]
    );
}

#[test]
fn the_kind_of_each_index_follows_the_documented_modulus() {
    assert_eq!(synthetic_kind(7), SyntheticKind::GuestWithMail);
    assert_eq!(synthetic_kind(57), SyntheticKind::GuestWithMail);
    assert_eq!(synthetic_kind(19), SyntheticKind::GuestWithoutMail);
    assert_eq!(synthetic_kind(11), SyntheticKind::DisabledMember);
    assert_eq!(synthetic_kind(23), SyntheticKind::NonAsciiNames);
    assert_eq!(synthetic_kind(37), SyntheticKind::LongCollidingLocalPart);
    assert_eq!(synthetic_kind(0), SyntheticKind::Member);
}

#[test]
fn a_million_users_are_generated_in_seconds() {
    let started = Instant::now();
    let users = synthetic_users(1_000_000, "contoso.com");
    let elapsed = started.elapsed();
    assert_eq!(users.len(), 1_000_000);
    // Generous bound: unoptimized test builds on a loaded 2-core machine.
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    eprintln!("generated 1,000,000 users in {elapsed:?}");
}
