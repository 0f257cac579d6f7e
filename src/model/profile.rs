//! What kind of SCIM app an app is (`[[apps]] profile`): a generic RFC 7644 server, or AWS IAM
//! Identity Center, whose SCIM endpoint differs in documented ways (AWS developer guide, "IAM
//! Identity Center SCIM implementation").
//!
//! Vocabulary only: the attributes a profile stores and requires, as mapping paths. `config`
//! refuses a mapping the profile cannot store, `mapping` reports a user missing a required
//! attribute as unmapped, and `scim` speaks the profile's wire differences (cursor paging,
//! membership reads); none of that lives here.

use std::fmt;

use super::attr_path::ENTERPRISE;

/// `[[apps]] profile`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Any RFC 7643/7644 service provider (the default).
    #[default]
    Generic,
    /// AWS IAM Identity Center's SCIM endpoint.
    AwsIdentityCenter,
}

/// What IAM Identity Center stores of a user (the guide's "Limitations" tables and the
/// attributes `PatchUser` may modify): top-level attribute names.
const AWS_USER_ATTRIBUTES: &[&str] = &[
    "userName",
    "externalId",
    "active",
    "name",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "emails",
    "addresses",
    "phoneNumbers",
];

/// The `name` sub-attributes IAM Identity Center stores.
const AWS_NAME_PARTS: &[&str] = &[
    "formatted",
    "familyName",
    "givenName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];

/// The enterprise extension attributes IAM Identity Center stores.
const AWS_ENTERPRISE_ATTRIBUTES: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
    "manager",
];

/// Multi-valued attributes IAM Identity Center takes one value of.
const AWS_SINGLE_VALUED: &[&str] = &["emails", "addresses", "phoneNumbers"];

impl Profile {
    /// Reads the config value (`"generic"`, `"aws-identity-center"`).
    pub fn parse(value: &str) -> Option<Profile> {
        match value {
            "generic" => Some(Profile::Generic),
            "aws-identity-center" => Some(Profile::AwsIdentityCenter),
            _ => None,
        }
    }

    /// The values `profile` accepts, for error messages.
    pub const VALUES: &'static str = "\"generic\" or \"aws-identity-center\"";

    /// Mapping paths every user must carry a value for, beyond `userName` and `active`
    /// ([`super::attr_path::REQUIRED_USER_PATHS`]); a user
    /// without one is reported as unmapped with the reason and never sent.
    pub fn required_user_paths(self) -> &'static [&'static str] {
        match self {
            Profile::Generic => &[],
            Profile::AwsIdentityCenter => &["displayName", "name.givenName", "name.familyName"],
        }
    }

    /// `None` when the app stores the mapping path `path`; otherwise why not.
    pub fn refuses(self, path: &str) -> Option<String> {
        match self {
            Profile::Generic => None,
            Profile::AwsIdentityCenter => aws_refuses(path),
        }
    }

    /// The multi-valued attribute (`emails`, …) a path writes into when the profile takes
    /// only one value of it.
    pub fn single_valued(self, path: &str) -> Option<&'static str> {
        match self {
            Profile::Generic => None,
            Profile::AwsIdentityCenter => {
                let attr = path.split(['[', '.']).next().unwrap_or(path);
                AWS_SINGLE_VALUED.iter().copied().find(|a| *a == attr)
            }
        }
    }

    /// Whether users can be looked up by the mapping path `path` (`matching`): IAM Identity
    /// Center filters users on `userName` and `externalId` only.
    pub fn can_match_on(self, path: &str) -> bool {
        match self {
            Profile::Generic => true,
            Profile::AwsIdentityCenter => matches!(path, "userName" | "externalId"),
        }
    }
}

fn aws_refuses(path: &str) -> Option<String> {
    if let Some(local) = path
        .strip_prefix(ENTERPRISE)
        .and_then(|p| p.strip_prefix(':'))
    {
        let attr = local.split('.').next().unwrap_or(local);
        return (!AWS_ENTERPRISE_ATTRIBUTES.contains(&attr)).then(|| {
            format!(
                "AWS IAM Identity Center stores only {} of the enterprise extension",
                AWS_ENTERPRISE_ATTRIBUTES.join(", ")
            )
        });
    }
    if path.starts_with("urn:") {
        return Some(
            "AWS IAM Identity Center stores no schema extension but the enterprise User's".into(),
        );
    }
    let attr = path.split(['[', '.']).next().unwrap_or(path);
    if !AWS_USER_ATTRIBUTES.contains(&attr) {
        return Some(format!(
            "AWS IAM Identity Center does not store the user attribute {attr:?}"
        ));
    }
    if attr == "name" {
        let part = path.strip_prefix("name.").unwrap_or_default();
        if !AWS_NAME_PARTS.contains(&part) {
            return Some(format!(
                "AWS IAM Identity Center stores only name.{}",
                AWS_NAME_PARTS.join(", name.")
            ));
        }
    }
    if path.ends_with(".display") {
        return Some(
            "AWS IAM Identity Center does not store the display sub-attribute of multi-valued attributes"
                .into(),
        );
    }
    None
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Generic => "generic",
            Profile::AwsIdentityCenter => "aws-identity-center",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_stores_what_its_guide_lists_and_nothing_else() {
        let aws = Profile::AwsIdentityCenter;
        for ok in [
            "userName",
            "name.givenName",
            "emails[type eq \"work\"].value",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            assert_eq!(aws.refuses(ok), None, "{ok}");
        }
        for bad in [
            "ims[type eq \"x\"].value",
            "name.nickname",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:badge",
            "urn:example:params:scim:schemas:extension:acme:2.0:User:tier",
            "emails[type eq \"work\"].display",
        ] {
            assert!(aws.refuses(bad).is_some(), "{bad}");
        }
        assert_eq!(Profile::Generic.refuses("ims[type eq \"x\"].value"), None);
        assert_eq!(
            aws.single_valued("emails[type eq \"home\"].value"),
            Some("emails")
        );
        assert_eq!(aws.single_valued("title"), None);
        assert!(
            aws.can_match_on("externalId") && !aws.can_match_on("emails[type eq \"work\"].value")
        );
        assert_eq!(Profile::parse("aws-identity-center"), Some(aws));
        assert_eq!(aws.to_string(), "aws-identity-center");
    }
}
