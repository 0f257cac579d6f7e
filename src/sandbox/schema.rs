//! What the sandbox knows about SCIM schemas (RFC 7643): schema URNs, the attributes of
//! User, Group and the enterprise User extension, key canonicalisation, and the discovery
//! documents served at `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas`.

use serde_json::{Map, Value, json};

/// Core User schema URN.
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub(crate) const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// ListResponse message URN.
pub(crate) const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Error message URN.
pub(crate) const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// PatchOp message URN.
pub(crate) const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The two resource types the sandbox serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    /// The core schema URN of this resource type.
    pub(crate) fn core_schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// The `meta.resourceType` value and the endpoint name without the plural `s`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The endpoint path segment (`Users` or `Groups`).
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    /// The core attributes of this resource type.
    pub(crate) fn attrs(self) -> &'static [AttrDef] {
        match self {
            Kind::User => USER_ATTRS,
            Kind::Group => GROUP_ATTRS,
        }
    }
}

/// One attribute of a schema, as much as the sandbox needs to know.
#[derive(Debug)]
pub(crate) struct AttrDef {
    /// Canonical spelling.
    pub(crate) name: &'static str,
    /// Multi-valued (a JSON array).
    pub(crate) multi: bool,
    /// Sub-attributes of a complex attribute (empty for simple attributes).
    pub(crate) subs: &'static [&'static str],
    /// Assigned by the server; clients may not write it.
    pub(crate) read_only: bool,
}

impl AttrDef {
    /// The canonical spelling of a sub-attribute, matched case-insensitively.
    pub(crate) fn sub(&self, name: &str) -> Option<&'static str> {
        self.subs
            .iter()
            .copied()
            .find(|s| s.eq_ignore_ascii_case(name))
    }
}

const fn simple(name: &'static str) -> AttrDef {
    AttrDef {
        name,
        multi: false,
        subs: &[],
        read_only: false,
    }
}

const fn multi(name: &'static str, subs: &'static [&'static str]) -> AttrDef {
    AttrDef {
        name,
        multi: true,
        subs,
        read_only: false,
    }
}

const fn read_only(name: &'static str, multi: bool) -> AttrDef {
    AttrDef {
        name,
        multi,
        subs: &[],
        read_only: true,
    }
}

const MULTI_SUBS: &[&str] = &["value", "display", "type", "primary", "$ref"];
const ADDRESS_SUBS: &[&str] = &[
    "formatted",
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
    "type",
    "primary",
];

static USER_ATTRS: &[AttrDef] = &[
    read_only("id", false),
    read_only("meta", false),
    read_only("groups", true),
    simple("externalId"),
    simple("userName"),
    AttrDef {
        name: "name",
        multi: false,
        subs: &[
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ],
        read_only: false,
    },
    simple("displayName"),
    simple("nickName"),
    simple("profileUrl"),
    simple("title"),
    simple("userType"),
    simple("preferredLanguage"),
    simple("locale"),
    simple("timezone"),
    simple("active"),
    simple("password"),
    multi("emails", MULTI_SUBS),
    multi("phoneNumbers", MULTI_SUBS),
    multi("ims", MULTI_SUBS),
    multi("photos", MULTI_SUBS),
    multi("addresses", ADDRESS_SUBS),
    multi("entitlements", MULTI_SUBS),
    multi("roles", MULTI_SUBS),
    multi("x509Certificates", MULTI_SUBS),
];

static GROUP_ATTRS: &[AttrDef] = &[
    read_only("id", false),
    read_only("meta", false),
    simple("externalId"),
    simple("displayName"),
    multi("members", &["value", "display", "type", "$ref"]),
];

/// Attributes of the enterprise User extension.
pub(crate) static ENTERPRISE_ATTRS: &[AttrDef] = &[
    simple("employeeNumber"),
    simple("costCenter"),
    simple("organization"),
    simple("division"),
    simple("department"),
    AttrDef {
        name: "manager",
        multi: false,
        subs: &["value", "$ref", "displayName"],
        read_only: false,
    },
];

/// Finds an attribute by name, case-insensitively.
pub(crate) fn find(defs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    defs.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// Whether `urn` names the enterprise User extension (case-insensitively).
pub(crate) fn is_enterprise(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)
}

/// Whether `key` names the enterprise User extension or one of its attributes
/// (`urn:…:enterprise:2.0:User`, `urn:…:enterprise:2.0:User:department`), case-insensitively.
pub(crate) fn names_enterprise(key: &str) -> bool {
    let n = ENTERPRISE_USER_SCHEMA.len();
    key.get(..n).is_some_and(is_enterprise) && matches!(key.as_bytes().get(n), None | Some(b':'))
}

/// Whether a User body (or a PATCH value) carries the enterprise extension: a key naming it
/// or one of its attributes, its URN in `schemas`, or either inside a core-schema-qualified
/// object.
pub(crate) fn carries_enterprise(body: &Map<String, Value>) -> bool {
    body.iter().any(|(key, value)| {
        if key.eq_ignore_ascii_case("schemas") {
            value
                .as_array()
                .is_some_and(|urns| urns.iter().filter_map(Value::as_str).any(is_enterprise))
        } else if key.eq_ignore_ascii_case(USER_SCHEMA) {
            value.as_object().is_some_and(carries_enterprise)
        } else {
            names_enterprise(key)
        }
    })
}

/// Looks a key up in an object case-insensitively (attribute names are case-insensitive).
pub(crate) fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The key actually used in `map` for `key` (case-insensitively), if any.
pub(crate) fn key_ci(map: &Map<String, Value>, key: &str) -> Option<String> {
    if map.contains_key(key) {
        return Some(key.to_owned());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
}

/// Rewrites the keys of a client-supplied object to the canonical spelling of `defs`
/// (recursively for sub-attributes and multi-valued elements); unknown keys are kept as
/// sent. Read-only attributes are dropped (RFC 7644 §3.5.1: they are ignored on write).
pub(crate) fn canonicalize(
    input: Map<String, Value>,
    defs: &'static [AttrDef],
    kind: Option<Kind>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in input {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(def) = find(defs, &key) {
            if def.read_only {
                continue;
            }
            out.insert(def.name.to_owned(), canonicalize_value(value, def));
        } else if kind == Some(Kind::User) && is_enterprise(&key) {
            let value = match value {
                Value::Object(inner) => Value::Object(canonicalize(inner, ENTERPRISE_ATTRS, None)),
                other => other,
            };
            out.insert(ENTERPRISE_USER_SCHEMA.to_owned(), value);
        } else if let Some(k) = kind
            && key.eq_ignore_ascii_case(k.core_schema())
        {
            // A core-schema-qualified object: fold its attributes into the root.
            if let Value::Object(inner) = value {
                out.extend(canonicalize(inner, defs, Some(k)));
            }
        } else {
            out.insert(key, value);
        }
    }
    out
}

/// Canonicalises the sub-attribute keys of one attribute value.
pub(crate) fn canonicalize_value(value: Value, def: &AttrDef) -> Value {
    if def.subs.is_empty() {
        return value;
    }
    let fix = |obj: Map<String, Value>| -> Map<String, Value> {
        obj.into_iter()
            .map(|(k, v)| match def.sub(&k) {
                Some(c) => (c.to_owned(), v),
                None => (k, v),
            })
            .collect()
    };
    match value {
        Value::Object(obj) => Value::Object(fix(obj)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| match v {
                    Value::Object(obj) => Value::Object(fix(obj)),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// `GET /ServiceProviderConfig`.
pub(crate) fn service_provider_config(base: &str, max_results: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token in the Authorization header",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// `GET /ResourceTypes`; `enterprise`: whether Users declare the enterprise extension.
pub(crate) fn resource_types(base: &str, enterprise: bool) -> Value {
    let user_extensions = if enterprise {
        json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}])
    } else {
        json!([])
    };
    list(vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": USER_SCHEMA,
            "schemaExtensions": user_extensions,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
        }),
    ])
}

fn attribute_json(def: &AttrDef, unique: &[&str]) -> Value {
    let returned = match def.name {
        "password" => "never",
        "id" => "always",
        _ => "default",
    };
    let mut attr = json!({
        "name": def.name,
        "type": if def.subs.is_empty() { "string" } else { "complex" },
        "multiValued": def.multi,
        "required": unique.contains(&def.name),
        "caseExact": matches!(def.name, "id" | "externalId"),
        "mutability": if def.read_only { "readOnly" } else if def.name == "password" { "writeOnly" } else { "readWrite" },
        "returned": returned,
        "uniqueness": if unique.contains(&def.name) { "server" } else { "none" },
    });
    if def.name == "active" {
        attr["type"] = json!("boolean");
    }
    if def.name == "meta" {
        attr["type"] = json!("complex");
    }
    if !def.subs.is_empty()
        && let Some(obj) = attr.as_object_mut()
    {
        let subs: Vec<Value> = def
            .subs
            .iter()
            .map(|s| {
                json!({
                    "name": s,
                    "type": match *s { "primary" => "boolean", "$ref" => "reference", _ => "string" },
                    "multiValued": false,
                    "required": false,
                    "caseExact": false,
                    "mutability": "readWrite",
                    "returned": "default",
                    "uniqueness": "none",
                })
            })
            .collect();
        obj.insert("subAttributes".to_owned(), Value::Array(subs));
    }
    attr
}

fn schema_json(base: &str, id: &str, name: &str, defs: &[AttrDef], unique: &[&str]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": format!("{name} schema"),
        "attributes": defs
            .iter()
            .filter(|d| d.name != "meta")
            .map(|d| attribute_json(d, unique))
            .collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}
    })
}

/// `GET /Schemas`; `enterprise`: whether the enterprise User extension is listed.
pub(crate) fn schemas(base: &str, enterprise: bool) -> Value {
    let mut all = vec![
        schema_json(base, USER_SCHEMA, "User", USER_ATTRS, &["userName"]),
        schema_json(base, GROUP_SCHEMA, "Group", GROUP_ATTRS, &["displayName"]),
    ];
    if enterprise {
        all.push(schema_json(
            base,
            ENTERPRISE_USER_SCHEMA,
            "EnterpriseUser",
            ENTERPRISE_ATTRS,
            &[],
        ));
    }
    list(all)
}

/// The resource of a discovery list whose `id` is `id` (case-insensitively: schema ids are
/// URNs), as `GET /ResourceTypes/{id}` and `GET /Schemas/{id}` return it.
pub(crate) fn list_item(list: Value, id: &str) -> Option<Value> {
    let Value::Object(mut list) = list else {
        return None;
    };
    let Some(Value::Array(resources)) = list.remove("Resources") else {
        return None;
    };
    resources.into_iter().find(|r| {
        r.get("id")
            .and_then(Value::as_str)
            .is_some_and(|have| have.eq_ignore_ascii_case(id))
    })
}
