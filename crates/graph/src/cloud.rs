//! National clouds: which authority and Graph host serve a tenant.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::Error;

/// A Microsoft cloud; tokens from one are not accepted by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// The global cloud (also used by GCC moderate).
    Global,
    /// US Government (GCC High).
    UsGov,
    /// US Government L5 (DoD).
    UsGovDod,
    /// China, operated by 21Vianet.
    China,
}

impl Cloud {
    /// Every cloud, in declaration order.
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::UsGov, Cloud::UsGovDod, Cloud::China];

    /// Returns the Entra authority host that issues tokens for this cloud.
    ///
    /// For China this is `https://login.chinacloudapi.cn`, the host the Graph national-cloud
    /// page lists; current Entra docs name `https://login.partner.microsoftonline.cn`, which
    /// can be set in [`GraphConfig::authority_host`](crate::GraphConfig::authority_host).
    pub fn authority_host(self) -> Url {
        parse_static(match self {
            Self::Global => "https://login.microsoftonline.com",
            Self::UsGov | Self::UsGovDod => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        })
    }

    /// Returns the Microsoft Graph host of this cloud.
    pub fn graph_host(self) -> Url {
        parse_static(match self {
            Self::Global => "https://graph.microsoft.com",
            Self::UsGov => "https://graph.microsoft.us",
            Self::UsGovDod => "https://dod-graph.microsoft.us",
            Self::China => "https://microsoftgraph.chinacloudapi.cn",
        })
    }

    /// Returns the token scope of this cloud's Microsoft Graph resource (`{resource}/.default`).
    ///
    /// The resource names the token's audience and belongs to the cloud, not to the host a
    /// request goes to: a proxy or gateway configured as the Graph host still needs a token
    /// for the cloud's Graph (Entra answers AADSTS500011 for a resource it does not know).
    pub fn graph_scope(self) -> &'static str {
        match self {
            Self::Global => "https://graph.microsoft.com/.default",
            Self::UsGov => "https://graph.microsoft.us/.default",
            Self::UsGovDod => "https://dod-graph.microsoft.us/.default",
            Self::China => "https://microsoftgraph.chinacloudapi.cn/.default",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::UsGov => "usgov",
            Self::UsGovDod => "usgov-dod",
            Self::China => "china",
        }
    }
}

fn parse_static(url: &'static str) -> Url {
    Url::parse(url).expect("cloud hosts are valid URLs")
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cloud {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|cloud| cloud.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown cloud {s:?}; expected one of global, usgov, usgov-dod, china"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_round_trips_through_its_name() {
        for cloud in Cloud::ALL {
            assert_eq!(cloud.to_string().parse::<Cloud>().unwrap(), cloud);
        }
        assert_eq!("usgov-dod".parse::<Cloud>().unwrap(), Cloud::UsGovDod);
    }

    #[test]
    fn an_unknown_cloud_name_is_invalid_config() {
        assert!(matches!(
            "germany".parse::<Cloud>(),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn hosts_follow_the_national_cloud_table() {
        assert_eq!(
            Cloud::Global.authority_host().as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            Cloud::UsGovDod.graph_host().as_str(),
            "https://dod-graph.microsoft.us/"
        );
        assert_eq!(
            Cloud::UsGov.authority_host(),
            Cloud::UsGovDod.authority_host()
        );
        for cloud in Cloud::ALL {
            // The Graph resource of each cloud is its default Graph host.
            assert_eq!(
                cloud.graph_scope(),
                format!("{}.default", cloud.graph_host())
            );
            assert_eq!(cloud.graph_host().scheme(), "https");
            assert_eq!(cloud.authority_host().scheme(), "https");
        }
    }
}
