//! The CLI's profile: what an administrator set once and every command uses, as D365 keeps a
//! session's current company. One small JSON file per user (`USERIMPORT_PROFILE`, else
//! `$XDG_CONFIG_HOME/userimport/profile.json`, else `~/.config/userimport/profile.json`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The company used when neither `--company`, `USERIMPORT_COMPANY` nor the profile names one
/// (D365's demo company, which the registry always has).
pub const DEFAULT_COMPANY: &str = "DAT";

/// Where `userimport dev` leaves the administrator's token for the CLI, under its data folder
/// (read by every build; written by the `dev` feature's `userimport dev`).
pub const DEV_TOKEN_FILE: &str = "admin.token";

/// The other people `userimport dev` makes tokens for (`--as NAME`), with their access.
pub const DEV_PEOPLE: [(&str, &str); 3] = [
    ("alice", service_runtime::auth::ADMIN),
    ("bob", service_runtime::auth::ADMIN),
    ("reader", service_runtime::auth::READER),
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The current company: imports, batch imports and run-now use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The token file of the last `userimport dev` started, so commands run from another
    /// folder find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_token_file: Option<PathBuf>,
    /// The emulated tenant of the last `userimport dev` started (for `dev tenant …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_emulator_url: Option<String>,
}

/// Where the profile lives, if a home or config folder is known.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("USERIMPORT_PROFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("userimport").join("profile.json"))
}

/// The profile at `path` (an empty one when there is no file).
pub fn load(path: &Path) -> anyhow::Result<Profile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a userimport profile", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Profile::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the profile to `path`, creating its folder.
pub fn save(path: &Path, profile: &Profile) -> anyhow::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(profile)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Where a command's company came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompanySource {
    /// `--company` or `USERIMPORT_COMPANY`.
    Given,
    /// The profile's current company.
    Profile(PathBuf),
    /// Nothing named one.
    Default,
}

/// The company a command uses: the one given, else the profile's current company, else DAT.
pub fn company(given: Option<String>) -> anyhow::Result<(String, CompanySource)> {
    if let Some(given) = given.filter(|c| !c.trim().is_empty()) {
        return Ok((given.trim().to_ascii_uppercase(), CompanySource::Given));
    }
    if let Some(path) = path()
        && let Some(company) = load(&path)?.company
    {
        return Ok((company, CompanySource::Profile(path)));
    }
    Ok((DEFAULT_COMPANY.to_owned(), CompanySource::Default))
}

/// A line telling which company a command used and why.
pub fn describe(company: &str, source: &CompanySource) -> String {
    match source {
        CompanySource::Given => format!("company {company}"),
        CompanySource::Profile(_) => format!(
            "company {company} (your current company; change it with `userimport company use CODE`)"
        ),
        CompanySource::Default => {
            format!("company {company} (the default; set yours with `userimport company use CODE`)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_profile_loads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("profile.json");
        assert_eq!(load(&path).unwrap(), Profile::default());
        let profile = Profile {
            company: Some("USMF".into()),
            dev_token_file: None,
            dev_emulator_url: None,
        };
        save(&path, &profile).unwrap();
        assert_eq!(load(&path).unwrap(), profile);
    }
}
