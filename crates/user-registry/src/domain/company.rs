//! Companies (D365 legal entities, `DataAreaId`).

use crate::error::Error;

/// A company code: 1 to 4 ASCII letters or digits, stored upper-case (`DAT`, `USMF`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanyCode(String);

impl CompanyCode {
    /// The company every registry has from the start, as in D365.
    pub const DEFAULT: &'static str = "DAT";

    /// Parses a code case-insensitively.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let code = raw.trim();
        if code.is_empty() {
            return Err(Error::invalid("company", "must not be empty"));
        }
        if code.len() > 4 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::invalid(
                "company",
                format!(
                    "{} is not a company code (1 to 4 letters or digits)",
                    service_runtime::error::quote(code)
                ),
            ));
        }
        Ok(Self(code.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CompanyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A company of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    pub code: CompanyCode,
    pub name: String,
}

impl Company {
    /// The longest company name accepted.
    pub const MAX_NAME_LEN: usize = 60;

    pub fn parse(code: &str, name: &str) -> Result<Self, Error> {
        let code = CompanyCode::parse(code)?;
        let name = name.trim();
        if name.chars().count() > Self::MAX_NAME_LEN {
            return Err(Error::invalid(
                "company.name",
                format!("must be at most {} characters", Self::MAX_NAME_LEN),
            ));
        }
        let name = if name.is_empty() {
            code.as_str().to_owned()
        } else {
            name.to_owned()
        };
        Ok(Self { code, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_codes_are_upper_cased() {
        assert_eq!(CompanyCode::parse(" usmf ").unwrap().as_str(), "USMF");
    }

    #[test]
    fn company_codes_longer_than_four_or_with_symbols_are_rejected() {
        assert!(CompanyCode::parse("USMFX").is_err());
        assert!(CompanyCode::parse("U-S").is_err());
        assert!(CompanyCode::parse("").is_err());
    }
}
