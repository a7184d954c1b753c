//! ERP user ids: how one is derived from a directory alias, and how collisions are resolved.
//!
//! The rule, applied by [`base_user_id`] and [`candidate`]:
//!
//! 1. Take the alias's local part (before the last `@`; the whole alias if it has none).
//! 2. Transliterate to ASCII (`Zoë` → `zoe`, `Łukasz` → `lukasz`) and lower-case it.
//! 3. Keep only `a-z`, `0-9`, `.`, `-` and `_`; drop everything else.
//! 4. Truncate to [`MAX_USER_ID_LEN`] (20) characters and trim `.`, `-` and `_` from both
//!    ends; if nothing is left, use `user`. This is the *base* id.
//! 5. The first user of a base gets the base itself. On collision, the n-th claimant (n ≥ 2)
//!    gets `truncate(base, 20 - digits(n)) + n`: the number is appended while there is room
//!    and replaces the tail otherwise (`christopher.alexande` → `christopher.alexand2`).
//!    Numbers come from a per-base counter in the registry, so they are never reused and two
//!    concurrent imports never pick the same one. A candidate that is still taken (by another
//!    base's id, or a renamed user) just takes the next number.
//!
//! Ids are unique case-insensitively (they are lower-case when derived; a rename may choose
//! any case) and an object id keeps its user id for ever: imports never change it.

/// The longest user id, as in D365's `UserInfo.Id` (nvarchar(20)).
pub const MAX_USER_ID_LEN: usize = 20;

/// Derives the base user id from a sign-in alias (UPN or mail).
pub fn base_user_id(alias: &str) -> String {
    let local = alias.rsplit_once('@').map_or(alias, |(local, _)| local);
    let ascii = deunicode::deunicode(local).to_lowercase();
    let kept: String = ascii
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        .collect();
    // Trim after truncating too, so a cut never leaves a trailing separator.
    let base = trim_separators(truncate(trim_separators(&kept), MAX_USER_ID_LEN));
    if base.is_empty() {
        "user".to_owned()
    } else {
        base.to_owned()
    }
}

fn trim_separators(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, '.' | '-' | '_'))
}

/// The user id the `n`-th claimant of `base` receives (n = 1 is the base itself).
pub fn candidate(base: &str, n: u64) -> String {
    if n <= 1 {
        return truncate(base, MAX_USER_ID_LEN).to_owned();
    }
    let suffix = n.to_string();
    let room = MAX_USER_ID_LEN.saturating_sub(suffix.len());
    format!("{}{suffix}", truncate(base, room))
}

/// The case-insensitive uniqueness key of a user id.
pub fn user_key(user_id: &str) -> String {
    user_id.to_lowercase()
}

/// Validates a user id chosen by an administrator (a rename): 1–20 characters of
/// letters, digits, `.`, `-` and `_`.
pub fn parse_user_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.chars().count() > MAX_USER_ID_LEN {
        return Err(format!("must be at most {MAX_USER_ID_LEN} characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(id.to_owned())
}

fn truncate(s: &str, max_chars: usize) -> &str {
    // Ids are ASCII after sanitising, but stay on char boundaries regardless.
    match s.char_indices().nth(max_chars) {
        Some((byte, _)) => &s[..byte],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_member_upn_gives_its_local_part() {
        assert_eq!(base_user_id("Adele.Vance@contoso.com"), "adele.vance");
    }

    #[test]
    fn non_ascii_letters_are_transliterated() {
        assert_eq!(base_user_id("zoë.ångström@contoso.com"), "zoe.angstrom");
        assert_eq!(base_user_id("łukasz.żółć@contoso.com"), "lukasz.zolc");
    }

    #[test]
    fn characters_outside_the_allowed_set_are_dropped() {
        assert_eq!(base_user_id("o'brien+test@contoso.com"), "obrientest");
        assert_eq!(base_user_id("..__x__..@contoso.com"), "x");
    }

    #[test]
    fn an_alias_with_nothing_usable_becomes_user() {
        assert_eq!(base_user_id("!!!@contoso.com"), "user");
        assert_eq!(base_user_id("@contoso.com"), "user");
    }

    #[test]
    fn long_local_parts_are_cut_to_twenty_characters() {
        assert_eq!(
            base_user_id("christopher.alexander.smith@contoso.com"),
            "christopher.alexande"
        );
    }

    #[test]
    fn suffixes_are_appended_when_there_is_room_and_replace_the_tail_otherwise() {
        assert_eq!(candidate("john", 2), "john2");
        assert_eq!(candidate("christopher.alexande", 2), "christopher.alexand2");
        assert_eq!(
            candidate("christopher.alexande", 10),
            "christopher.alexan10"
        );
        assert_eq!(candidate("christopher.alexande", 1), "christopher.alexande");
    }

    #[test]
    fn renamed_ids_are_checked_for_length_and_characters() {
        assert_eq!(parse_user_id(" Admin.2 ").unwrap(), "Admin.2");
        assert!(parse_user_id("").is_err());
        assert!(parse_user_id("a b").is_err());
        assert!(parse_user_id("abcdefghijklmnopqrstu").is_err());
    }

    proptest! {
        #[test]
        fn base_ids_are_short_sanitised_and_stable(alias in "\\PC{0,60}(@[a-z]{1,10}\\.com)?") {
            let base = base_user_id(&alias);
            prop_assert!(!base.is_empty());
            prop_assert!(base.chars().count() <= MAX_USER_ID_LEN);
            prop_assert!(base.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c)));
            prop_assert_eq!(base_user_id(&alias), base.clone());
            // A base id is its own base: deriving again changes nothing.
            prop_assert_eq!(base_user_id(&base), base);
        }

        #[test]
        fn candidates_are_short_and_distinct_per_number(base in "[a-z0-9._-]{1,20}", n in 1u64..100_000) {
            let id = candidate(&base, n);
            prop_assert!(id.chars().count() <= MAX_USER_ID_LEN);
            prop_assert_eq!(candidate(&base, n), id.clone());
            if n >= 2 {
                prop_assert!(id.ends_with(&n.to_string()));
                prop_assert_ne!(candidate(&base, n + 1), id);
            }
        }
    }
}
