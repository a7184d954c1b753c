//! The deterministic synthetic tenant.

use std::collections::HashMap;

/// One user object as the emulated tenant stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedUser {
    /// Object id: a lowercase GUID.
    pub id: String,
    /// `userPrincipalName`, unique in the tenant (compared case-insensitively).
    pub user_principal_name: String,
    /// `mail`; `None` is served as JSON `null`.
    pub mail: Option<String>,
    /// `displayName`.
    pub display_name: String,
    /// `givenName`.
    pub given_name: Option<String>,
    /// `surname`.
    pub surname: Option<String>,
    /// `accountEnabled`.
    pub account_enabled: bool,
    /// `userType`: `"Member"` or `"Guest"`.
    pub user_type: String,
}

/// Number of consecutive indexes over which the kinds of users repeat.
pub const KIND_PERIOD: usize = 50;

/// What kind of user [`synthetic_users`] generates at an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticKind {
    /// An enabled member `first.last@{domain}` whose mail equals the UPN.
    Member,
    /// A guest `{local}_{external domain}#EXT#@{domain}` with mail `{local}@{external domain}`.
    GuestWithMail,
    /// A guest with an `#EXT#` UPN whose mail is `null` (invitation not redeemed).
    GuestWithoutMail,
    /// An ordinary member with `accountEnabled: false`.
    DisabledMember,
    /// A member with non-ASCII names and an ASCII-transliterated UPN local part.
    NonAsciiNames,
    /// A member whose UPN/mail local part shares its first 20 characters with another user's.
    LongCollidingLocalPart,
    /// An enabled member without a mailbox (mail `null`).
    MemberWithoutMail,
    /// A room account: no given name or surname.
    ConferenceRoom,
}

/// Returns the kind of user generated at `index`; the rule is `index % KIND_PERIOD`.
pub fn synthetic_kind(index: usize) -> SyntheticKind {
    match index % KIND_PERIOD {
        7 | 32 => SyntheticKind::GuestWithMail,
        19 => SyntheticKind::GuestWithoutMail,
        11 | 41 => SyntheticKind::DisabledMember,
        23 => SyntheticKind::NonAsciiNames,
        37 => SyntheticKind::LongCollidingLocalPart,
        43 => SyntheticKind::MemberWithoutMail,
        47 => SyntheticKind::ConferenceRoom,
        _ => SyntheticKind::Member,
    }
}

/// Builds a deterministic synthetic tenant of `n` users in the tenant domain `domain`.
///
/// The same `n` and `domain` give identical users on any machine, and the users of a
/// smaller `n` are a prefix of those of a larger one. Users are generated in index order,
/// and the kind at index `i` follows `i % 50` (see [`synthetic_kind`]):
///
/// | `i % 50` | kind |
/// |---|---|
/// | 7, 32 | guest with mail: UPN `{local}_{ext}#EXT#@{domain}`, mail `{local}@{ext}`, `userType` `Guest`; the first is `jane_fabrikam.com#EXT#@{domain}` / `jane@fabrikam.com` |
/// | 19 | guest whose mail is `null` |
/// | 11, 41 | member with `accountEnabled: false` |
/// | 23 | non-ASCII names ("Zoë Ångström", "Łukasz Żółć", "José Núñez", "王明", a decomposed "Renée", Cyrillic, Greek, Korean...) with transliterated UPN local parts (`zoe.angstrom`) |
/// | 37 | local parts that agree on their first 20 characters, alternating (`christopher.alexander.smith`, `christopher.alexander.smyth`, ...) |
/// | 43 | enabled member with mail `null` |
/// | 47 | room account "Conf Room {Last}" without given name or surname |
/// | otherwise | ordinary member `first.last@{domain}` (names picked by splitmix64 of the index, including `o'brien` and `smith-jones`), mail = UPN |
///
/// UPN local parts are made unique by appending the occurrence number from the second
/// occurrence on (`james.smith`, `james.smith2`, ...; guests `jane2_fabrikam.com#EXT#`).
/// No base local part ends in a digit, so suffixed names never collide with others.
/// Object ids are lowercase version-4-shaped GUIDs built from splitmix64 of the index,
/// which is a bijection, so ids are unique. Display names are not unique, as in real tenants.
pub fn synthetic_users(n: usize, domain: &str) -> Vec<EmulatedUser> {
    let mut generator = Generator {
        domain,
        occurrences: HashMap::new(),
    };
    (0..n).map(|index| generator.user(index)).collect()
}

struct Generator<'a> {
    domain: &'a str,
    /// How often each base UPN was generated so far; at most a few thousand distinct bases.
    occurrences: HashMap<String, u32>,
}

impl Generator<'_> {
    fn user(&mut self, index: usize) -> EmulatedUser {
        let id = object_id(index);
        let cycle = index / KIND_PERIOD;
        match synthetic_kind(index) {
            kind @ (SyntheticKind::Member
            | SyntheticKind::DisabledMember
            | SyntheticKind::MemberWithoutMail) => {
                let (first, last) = ordinary_name(index);
                let local = format!("{}.{}", local_part_of(first), local_part_of(last));
                let upn_local = self.unique(&local, "");
                let upn = format!("{upn_local}@{}", self.domain);
                EmulatedUser {
                    id,
                    mail: (kind != SyntheticKind::MemberWithoutMail).then(|| upn.clone()),
                    user_principal_name: upn,
                    display_name: format!("{first} {last}"),
                    given_name: Some(first.to_owned()),
                    surname: Some(last.to_owned()),
                    account_enabled: kind != SyntheticKind::DisabledMember,
                    user_type: "Member".to_owned(),
                }
            }
            kind @ (SyntheticKind::GuestWithMail | SyntheticKind::GuestWithoutMail) => {
                let slot = match index % KIND_PERIOD {
                    7 => 0,
                    19 => 1,
                    _ => 2,
                };
                let guest = &GUESTS[(cycle * 3 + slot) % GUESTS.len()];
                let suffix = format!("_{}#EXT#", guest.external_domain);
                let external_local = self.unique(guest.external_local, &suffix);
                EmulatedUser {
                    id,
                    user_principal_name: format!("{external_local}{suffix}@{}", self.domain),
                    mail: (kind == SyntheticKind::GuestWithMail)
                        .then(|| format!("{external_local}@{}", guest.external_domain)),
                    display_name: format!("{} {}", guest.given, guest.surname),
                    given_name: Some(guest.given.to_owned()),
                    surname: Some(guest.surname.to_owned()),
                    account_enabled: true,
                    user_type: "Guest".to_owned(),
                }
            }
            SyntheticKind::NonAsciiNames => {
                let person = &NON_ASCII[cycle % NON_ASCII.len()];
                self.member(
                    id,
                    person.local,
                    person.display,
                    person.given,
                    person.surname,
                )
            }
            SyntheticKind::LongCollidingLocalPart => {
                let (given, surname) = LONG_NAMES[cycle % LONG_NAMES.len()];
                let local = format!("{}.{}", local_part_of(given), local_part_of(surname));
                let display = format!("{given} {surname}");
                self.member(id, &local, &display, given, surname)
            }
            SyntheticKind::ConferenceRoom => {
                let (_, last) = ordinary_name(index);
                let local = format!("confroom.{}", local_part_of(last));
                let upn_local = self.unique(&local, "");
                let upn = format!("{upn_local}@{}", self.domain);
                EmulatedUser {
                    id,
                    mail: Some(upn.clone()),
                    user_principal_name: upn,
                    display_name: format!("Conf Room {last}"),
                    given_name: None,
                    surname: None,
                    account_enabled: true,
                    user_type: "Member".to_owned(),
                }
            }
        }
    }

    fn member(
        &mut self,
        id: String,
        local: &str,
        display: &str,
        given: &str,
        surname: &str,
    ) -> EmulatedUser {
        let upn_local = self.unique(local, "");
        let upn = format!("{upn_local}@{}", self.domain);
        EmulatedUser {
            id,
            mail: Some(upn.clone()),
            user_principal_name: upn,
            display_name: display.to_owned(),
            given_name: Some(given.to_owned()),
            surname: Some(surname.to_owned()),
            account_enabled: true,
            user_type: "Member".to_owned(),
        }
    }

    /// Returns `local`, or `local{k}` for its k-th occurrence (k >= 2) with the same `suffix`.
    fn unique(&mut self, local: &str, suffix: &str) -> String {
        let key = format!("{local}{suffix}");
        let seen = match self.occurrences.get_mut(&key) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                self.occurrences.insert(key, 1);
                1
            }
        };
        if seen == 1 {
            local.to_owned()
        } else {
            format!("{local}{seen}")
        }
    }
}

/// Lowercases a name and joins its words with dots: "Christopher Alexander" -> "christopher.alexander".
fn local_part_of(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

fn ordinary_name(index: usize) -> (&'static str, &'static str) {
    let h = splitmix64(index as u64 ^ 0x6E61_6D65_5345_4544);
    let first = FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[((h >> 32) % LAST_NAMES.len() as u64) as usize];
    (first, last)
}

/// splitmix64's output function: a bijection on `u64`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A lowercase, version-4-shaped GUID unique per index.
///
/// All 64 bits of `splitmix64(index)` (a bijection) are kept: 60 in the first half around
/// the version nibble, 4 after the variant bits; the rest is filler from a second hash.
fn object_id(index: usize) -> String {
    let unique = splitmix64(index as u64 ^ 0x0B1E_C71D_0000_0000);
    let filler = splitmix64(index as u64 ^ 0xF111_E400_0000_0000);
    let top = unique >> 4;
    let high = ((top >> 12) << 16) | (0x4 << 12) | (top & 0xFFF);
    let low = (0b10 << 62) | ((unique & 0xF) << 58) | (filler & ((1 << 58) - 1));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    )
}

struct Guest {
    given: &'static str,
    surname: &'static str,
    external_local: &'static str,
    external_domain: &'static str,
}

const GUESTS: &[Guest] = &[
    Guest {
        given: "Jane",
        surname: "Doe",
        external_local: "jane",
        external_domain: "fabrikam.com",
    },
    Guest {
        given: "Adele",
        surname: "Vance",
        external_local: "adelev",
        external_domain: "adatum.com",
    },
    Guest {
        given: "Pradeep",
        surname: "Gupta",
        external_local: "pradeep.gupta",
        external_domain: "gmail.com",
    },
    Guest {
        given: "Megan",
        surname: "Bowen",
        external_local: "meganb",
        external_domain: "northwindtraders.com",
    },
    Guest {
        given: "Diego",
        surname: "Siciliani",
        external_local: "diego.siciliani",
        external_domain: "outlook.com",
    },
    Guest {
        given: "Isaiah",
        surname: "Langer",
        external_local: "isaiahl",
        external_domain: "tailspintoys.com",
    },
    Guest {
        given: "Lidia",
        surname: "Holloway",
        external_local: "lidia.holloway",
        external_domain: "fabrikam.com",
    },
];

struct NonAsciiPerson {
    given: &'static str,
    surname: &'static str,
    display: &'static str,
    local: &'static str,
}

const NON_ASCII: &[NonAsciiPerson] = &[
    NonAsciiPerson {
        given: "Zoë",
        surname: "Ångström",
        display: "Zoë Ångström",
        local: "zoe.angstrom",
    },
    NonAsciiPerson {
        given: "Łukasz",
        surname: "Żółć",
        display: "Łukasz Żółć",
        local: "lukasz.zolc",
    },
    NonAsciiPerson {
        given: "José",
        surname: "Núñez",
        display: "José Núñez",
        local: "jose.nunez",
    },
    NonAsciiPerson {
        given: "明",
        surname: "王",
        display: "王明",
        local: "wang.ming",
    },
    NonAsciiPerson {
        given: "Björn",
        surname: "Østergård",
        display: "Björn Østergård",
        local: "bjorn.ostergard",
    },
    NonAsciiPerson {
        // Decomposed (NFD) on purpose: "e" followed by U+0301.
        given: "Rene\u{301}e",
        surname: "Dubois",
        display: "Rene\u{301}e Dubois",
        local: "renee.dubois",
    },
    NonAsciiPerson {
        given: "Дмитрий",
        surname: "Иванов",
        display: "Дмитрий Иванов",
        local: "dmitrii.ivanov",
    },
    NonAsciiPerson {
        given: "さくら",
        surname: "佐藤",
        display: "佐藤 さくら",
        local: "sato.sakura",
    },
    NonAsciiPerson {
        given: "Αλέξανδρος",
        surname: "Παπαδόπουλος",
        display: "Αλέξανδρος Παπαδόπουλος",
        local: "alexandros.papadopoulos",
    },
    NonAsciiPerson {
        given: "Ngọc Anh",
        surname: "Trần",
        display: "Trần Ngọc Anh",
        local: "ngocanh.tran",
    },
    NonAsciiPerson {
        given: "민준",
        surname: "김",
        display: "김민준",
        local: "kim.minjun",
    },
    NonAsciiPerson {
        given: "Ömer",
        surname: "Çelik",
        display: "Ömer Çelik",
        local: "omer.celik",
    },
];

/// Pairs whose local parts share the first 20 characters.
const LONG_NAMES: &[(&str, &str)] = &[
    ("Christopher Alexander", "Smith"),
    ("Christopher Alexander", "Smyth"),
    ("Maximiliana Josephine", "Worthington"),
    ("Maximiliana Josephine", "Wetherington"),
    ("Alexandria Catherine", "Montgomery"),
    ("Alexandria Catherine", "Montgomerie"),
];

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Donald",
    "Margaret",
    "Steven",
    "Ashley",
    "Andrew",
    "Kimberly",
    "Paul",
    "Emily",
    "Joshua",
    "Donna",
    "Kenneth",
    "Michelle",
    "Kevin",
    "Carol",
    "Brian",
    "Amanda",
    "George",
    "Melissa",
    "Timothy",
    "Deborah",
    "Ronald",
    "Stephanie",
    "Jason",
    "Rebecca",
    "Edward",
    "Laura",
    "Jeffrey",
    "Helen",
    "Ryan",
    "Sharon",
    "Jacob",
    "Cynthia",
    "Gary",
    "Kathleen",
    "Nicholas",
    "Amy",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "O'Brien",
    "Smith-Jones",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn two_generations_of_the_same_size_are_identical() {
        assert_eq!(
            synthetic_users(1_000, "contoso.com"),
            synthetic_users(1_000, "contoso.com")
        );
    }

    #[test]
    fn a_smaller_tenant_is_a_prefix_of_a_larger_one() {
        let small = synthetic_users(120, "contoso.com");
        let large = synthetic_users(500, "contoso.com");
        assert_eq!(small[..], large[..120]);
    }

    #[test]
    fn ids_and_user_principal_names_are_unique_in_a_large_tenant() {
        let users = synthetic_users(200_000, "contoso.com");
        let ids: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let upns: HashSet<String> = users
            .iter()
            .map(|u| u.user_principal_name.to_lowercase())
            .collect();
        assert_eq!(ids.len(), users.len());
        assert_eq!(upns.len(), users.len());
    }

    #[test]
    fn object_ids_are_lowercase_version_4_guids() {
        for user in synthetic_users(200, "contoso.com") {
            let id = &user.id;
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f' | '-')));
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
        }
    }

    #[test]
    fn the_first_guest_is_jane_from_fabrikam() {
        let users = synthetic_users(8, "contoso.com");
        let jane = &users[7];
        assert_eq!(
            jane.user_principal_name,
            "jane_fabrikam.com#EXT#@contoso.com"
        );
        assert_eq!(jane.mail.as_deref(), Some("jane@fabrikam.com"));
        assert_eq!(jane.user_type, "Guest");
    }

    #[test]
    fn colliding_long_local_parts_share_their_first_twenty_characters() {
        let users = synthetic_users(100, "contoso.com");
        assert_eq!(
            users[37].user_principal_name,
            "christopher.alexander.smith@contoso.com"
        );
        assert_eq!(
            users[87].user_principal_name,
            "christopher.alexander.smyth@contoso.com"
        );
        assert_eq!(
            users[37].user_principal_name[..20],
            users[87].user_principal_name[..20]
        );
    }

    #[test]
    fn user_principal_names_are_ascii() {
        for user in synthetic_users(2_000, "contoso.com") {
            assert!(user.user_principal_name.is_ascii(), "{user:?}");
        }
    }
}
