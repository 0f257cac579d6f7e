//! The Microsoft Graph source: Entra ID users, assigned groups, their members and their
//! PIM-eligible members, read into a complete [`Directory`] at every snapshot: in full
//! ([`GraphSource::read`]), or from the previous snapshot and Graph's delta queries when the
//! source reads changes only ([`GraphSource::with_delta`], see [`delta`]: what `run` and
//! `sync-now` use). Both give the same directory for the same tenant state.
//!
//! Only this module knows Graph JSON. What a full read reads, per assigned group (the union
//! of every app's `groups`):
//!
//! - `GET /v1.0/groups/{id}?$select=id,displayName` (a `404` leaves the group out of the
//!   snapshot, so only the apps that have it assigned fail their cycle, as with the file
//!   source);
//! - its user members with their mapped attributes, `…/members/microsoft.graph.user` for
//!   groups of apps with `flatten_nested = false`, `…/transitiveMembers/microsoft.graph.user`
//!   for groups of apps with `flatten_nested = true` (both when apps disagree), every page
//!   through `@odata.nextLink`;
//! - its PIM eligibility, `identityGovernance/privilegedAccess/group/eligibilityScheduleInstances`
//!   filtered on the group (`accessId` `member`), all pages;
//! - eligible users not already read as members, once each per snapshot, with `/v1.0/users/{id}`.
//!
//! For the PIM poller of service mode ([`PimFeed`]), per assigned group and every
//! `pim_poll_interval`: `identityGovernance/privilegedAccess/group/assignmentScheduleInstances`
//! filtered on the group, all pages. For the push groups' watch ([`watch`]), every
//! `watch_interval`: `groups/delta` scoped to the push groups.
//!
//! A group whose members are wanted both ways gets its direct user members as `members` plus
//! a synthetic nested group `{id}/transitiveMembers` holding the transitive users: mapping
//! then finds the direct members for apps that do not flatten (nested groups are not users)
//! and the transitive ones for apps that do, with no second code path.
//!
//! Members are listed in id order, whatever order Graph sends them in.
//!
//! Any read that finally fails (see [`http`]) fails the whole snapshot: never a partial one.
//! [`auth`] gets and renews the app-only token. The in-process Graph that tests and benchmarks
//! read from is `scim_sync_testkit::graph_double` (`crates/testkit`), not part of the product.

pub mod auth;
pub mod batch;
pub mod delta;
pub mod http;
pub mod policy;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, utf8_percent_encode};
use serde_json::Value;

use crate::config::{AppConfig, GraphConfig, Secret};
use crate::http::RetryPolicy;
use crate::model::{Directory, SourceAttrs, SourceGroup, SourceId, SourceUser};
use crate::source::pim::{PimFeed, PimInstance, PimPolicy, PimRequest};
use auth::TokenSource;
use http::GraphHttp;

/// Why Microsoft Graph could not be read. Every variant names what was read and where;
/// none carries a token or the client secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity platform refused to issue a token (or could not be reached).
    #[error("cannot get a Microsoft Graph token for tenant {tenant} from {url}: {message}")]
    Auth {
        /// `tenant_id`.
        tenant: String,
        /// The token endpoint.
        url: String,
        /// The answer (`error`, `error_description` with its AADSTS code) and what to check.
        message: String,
    },
    /// Graph answered with an error status, after the retries.
    #[error(
        "Microsoft Graph: reading {what}: GET {path}: HTTP {status}{}: {message}",
        code_text(code)
    )]
    Status {
        /// What was being read, e.g. `members of group 0c1f…`.
        what: String,
        /// The URL path (no query, no token).
        path: String,
        /// The HTTP status.
        status: u16,
        /// Graph's `error.code`, or empty.
        code: String,
        /// Graph's `error.message`, or the start of the body.
        message: String,
    },
    /// Graph could not be reached or the answer was cut off, after the retries.
    #[error("Microsoft Graph: reading {what}: GET {path}: {message}")]
    Transport {
        /// What was being read.
        what: String,
        /// The URL path.
        path: String,
        /// The cause.
        message: String,
    },
    /// Graph answered 2xx with a body of an unexpected shape.
    #[error("Microsoft Graph: reading {what}: GET {path}: unexpected answer: {message}")]
    Answer {
        /// What was being read.
        what: String,
        /// The URL path.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Graph's answer was larger than the bound (32 MiB): refused unread, not retried.
    #[error("Microsoft Graph: reading {what}: GET {path}: HTTP {status}: {body}; refused")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The URL path.
        path: String,
        /// The HTTP status of the refused answer.
        status: u16,
        /// The limit and how much was seen.
        body: crate::http::TooLarge,
    },
    /// The HTTP client could not be built.
    #[error("Microsoft Graph: cannot build the HTTP client: {0}")]
    Client(String),
}

impl Error {
    /// Whether this is Graph saying a delta token can no longer be used (`410 Gone`, or
    /// the error code `syncStateNotFound` or `resyncRequired`): the round must start over.
    pub fn needs_resync(&self) -> bool {
        match self {
            Error::Status { status, code, .. } => {
                *status == 410
                    || code.eq_ignore_ascii_case("syncStateNotFound")
                    || code.eq_ignore_ascii_case("resyncRequired")
            }
            _ => false,
        }
    }
}

fn code_text(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

/// The user attributes always read: the default mapping's sources (SPEC §3).
pub const USER_ATTRIBUTES: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "accountEnabled",
    "jobTitle",
    "employeeId",
    "department",
];

/// Page size asked of member lists (Graph's maximum).
pub const PAGE_SIZE: usize = 999;

/// Groups read at once.
const CONCURRENCY: usize = 8;

/// Path segments: everything but RFC 3986 unreserved characters is encoded (the crate's
/// strict set, shared with the SCIM client).
pub(crate) use crate::http::STRICT as SEGMENT;
/// Query values: as segments, and `,` (the `$select` separator) kept.
const QUERY: &AsciiSet = &SEGMENT.remove(b',');

/// How one group's members are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reads {
    /// Direct members, for apps with `flatten_nested = false`.
    direct: bool,
    /// Transitive members, for apps with `flatten_nested = true`.
    transitive: bool,
}

/// The Graph source of one tenant for the groups assigned to a set of apps.
#[derive(Debug)]
pub struct GraphSource {
    tenant_id: String,
    graph_url: String,
    http: Arc<GraphHttp>,
    groups: BTreeMap<SourceId, Reads>,
    select: String,
    concurrency: usize,
    /// Set when snapshots are read with delta queries ([`GraphSource::with_delta`]).
    delta: Option<delta::Delta>,
    /// Every app's push groups, in id order, for the scoped watch ([`watch`]).
    push_groups: Vec<SourceId>,
    /// The push groups' watch: its kept links.
    watch: watch::Watch,
    /// Answers of targeted eligibility reads, kept [`ELIGIBILITY_TTL`] (a burst of refused
    /// webhook calls costs one request).
    eligibility: std::sync::Mutex<HashMap<(SourceId, SourceId), (std::time::Instant, bool)>>,
}

/// How long a targeted eligibility answer is reused.
const ELIGIBILITY_TTL: Duration = Duration::from_secs(10);

/// One group as read, before merging into the snapshot.
struct GroupRead {
    group: SourceGroup,
    users: Vec<SourceUser>,
    transitive: Option<Vec<SourceId>>,
}

impl GraphSource {
    /// A source reading `cfg`'s tenant with `secret`, for the groups assigned to `apps`
    /// (transitively for apps with `flatten_nested`), reading the user attributes the
    /// apps' mappings use, with the default retry policy.
    ///
    /// # Errors
    /// [`Error::Client`] when the HTTP client cannot be built.
    pub fn new(cfg: &GraphConfig, secret: Secret, apps: &[AppConfig]) -> Result<Self, Error> {
        Self::with_retry(cfg, secret, apps, http::default_retry())
    }

    /// As [`GraphSource::new`] with another retry policy (tests use short backoffs).
    ///
    /// # Errors
    /// [`Error::Client`] when the HTTP client cannot be built.
    pub fn with_retry(
        cfg: &GraphConfig,
        secret: Secret,
        apps: &[AppConfig],
        retry: RetryPolicy,
    ) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("scim-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(100))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let auth = TokenSource::new(
            client.clone(),
            &cfg.login_url,
            &cfg.graph_url,
            &cfg.tenant_id,
            &cfg.client_id,
            secret,
        );
        let mut groups: BTreeMap<SourceId, Reads> = BTreeMap::new();
        let mut attrs: BTreeSet<String> = USER_ATTRIBUTES.iter().map(|a| (*a).to_owned()).collect();
        let mut push_groups = BTreeSet::new();
        for app in apps {
            push_groups.extend(app.push_groups.iter().cloned());
            for g in &app.groups {
                let reads = groups.entry(g.clone()).or_default();
                if app.flatten_nested {
                    reads.transitive = true;
                } else {
                    reads.direct = true;
                }
            }
            attrs.extend(
                crate::model::attr_path::user_mapping(&app.attributes)
                    .into_iter()
                    .map(|(_, src)| src),
            );
        }
        Ok(GraphSource {
            tenant_id: cfg.tenant_id.clone(),
            graph_url: cfg.graph_url.trim_end_matches('/').to_owned(),
            http: Arc::new(GraphHttp::new(client, auth, retry)),
            groups,
            select: attrs.into_iter().collect::<Vec<_>>().join(","),
            concurrency: CONCURRENCY,
            delta: None,
            push_groups: push_groups.into_iter().collect(),
            watch: watch::Watch::new(&cfg.tenant_id, None),
            eligibility: std::sync::Mutex::default(),
        })
    }

    /// Reads Graph's answers up to `bytes` each instead of 32 MiB
    /// ([`crate::http::DEFAULT_MAX_RESPONSE`]); tests use a small bound.
    pub fn with_max_response(self, bytes: u64) -> Self {
        self.http.set_max_response(bytes);
        self
    }

    /// Graph requests sent so far, retries included, token requests excluded.
    pub fn requests(&self) -> u64 {
        self.http.requests()
    }

    /// The groups read, in id order.
    pub fn groups(&self) -> impl Iterator<Item = &SourceId> {
        self.groups.keys()
    }

    /// Reads a complete snapshot in full (the snapshots of a source reading changes only
    /// start from one of Graph's delta rounds instead).
    ///
    /// # Errors
    /// The first read that finally failed; nothing partial is returned.
    pub async fn read(&self) -> Result<Directory, Error> {
        let todo: Vec<(SourceId, Reads)> =
            self.groups.iter().map(|(id, r)| (id.clone(), *r)).collect();
        let reads: Vec<Option<GroupRead>> = futures::stream::iter(todo)
            .map(|(id, reads)| async move { self.read_group(&id, reads).await })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        self.assemble(reads.into_iter().flatten().collect(), &BTreeMap::new())
            .await
    }

    /// The snapshot of the groups as read: users merged, synthetic transitive groups added,
    /// members and eligible users not read with the groups taken from `known`, other
    /// eligible users read once each, and eligible principals that are not users left out.
    async fn assemble(
        &self,
        reads: Vec<GroupRead>,
        known: &BTreeMap<SourceId, SourceAttrs>,
    ) -> Result<Directory, Error> {
        let mut dir = Directory::default();
        for read in reads {
            for u in read.users {
                dir.users.entry(u.id.clone()).or_insert(u);
            }
            let mut group = read.group;
            if let Some(transitive) = read.transitive {
                if group.members.is_empty() && !self.groups.get(&group.id).is_some_and(|r| r.direct)
                {
                    group.members = transitive;
                } else {
                    let nested = SourceId::new(format!("{}/transitiveMembers", group.id));
                    group.members.push(nested.clone());
                    dir.groups.insert(
                        nested.clone(),
                        SourceGroup {
                            id: nested,
                            display_name: format!("{} (transitive members)", group.display_name),
                            members: transitive,
                            eligible: Vec::new(),
                        },
                    );
                }
            }
            dir.groups.insert(group.id.clone(), group);
        }
        // Users listed by id only (a delta snapshot's members; eligible users) from `known`.
        let listed: BTreeSet<SourceId> = dir
            .groups
            .values()
            .flat_map(|g| g.members.iter().chain(g.eligible.iter()))
            .filter(|u| !dir.users.contains_key(*u))
            .cloned()
            .collect();
        for id in listed {
            if let Some(attrs) = known.get(&id) {
                let user = SourceUser {
                    id: id.clone(),
                    attrs: attrs.clone(),
                };
                dir.users.insert(id, user);
            }
        }
        // Eligible users still unknown: each read once, however many groups.
        let missing: Vec<SourceId> = dir
            .groups
            .values()
            .flat_map(|g| g.eligible.iter())
            .filter(|u| !dir.users.contains_key(*u))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for u in self.read_users(missing, "eligible user").await? {
            dir.users.insert(u.id.clone(), u);
        }
        // An eligible principal that is not a user (a group, a deleted user) cannot activate
        // as a user: it is left out rather than failing every snapshot.
        for g in dir.groups.values_mut() {
            g.eligible.retain(|u| dir.users.contains_key(u));
        }
        Ok(dir)
    }

    async fn read_group(&self, id: &SourceId, reads: Reads) -> Result<Option<GroupRead>, Error> {
        let seg = utf8_percent_encode(id.as_str(), SEGMENT).to_string();
        let base = format!("{}/v1.0/groups/{seg}", self.graph_url);
        let Some(group) = self
            .http
            .get(
                &format!("{base}?$select=id,displayName"),
                &format!("group {id}"),
                true,
            )
            .await?
        else {
            tracing::warn!(group = %id, "assigned group not found in Microsoft Graph");
            return Ok(None);
        };
        let display_name = group
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let select = utf8_percent_encode(&self.select, QUERY).to_string();
        let members_url = |rel: &str| {
            format!("{base}/{rel}/microsoft.graph.user?$select={select}&$top={PAGE_SIZE}")
        };
        let direct = async {
            if reads.direct {
                self.http
                    .get_all(members_url("members"), &format!("members of group {id}"))
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let transitive = async {
            if reads.transitive {
                self.http
                    .get_all(
                        members_url("transitiveMembers"),
                        &format!("transitive members of group {id}"),
                    )
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let eligibility = self.read_eligibility(id);
        let (direct, transitive, eligibility) =
            futures::try_join!(direct, transitive, eligibility)?;

        let mut users = Vec::new();
        // Members in id order, whatever order Graph lists them in: a delta snapshot of the
        // same tenant state then yields the same directory.
        let mut ids = |items: Vec<Value>, what: &str| -> Result<Vec<SourceId>, Error> {
            let mut seen = BTreeSet::new();
            for item in items {
                let user = to_user(item).ok_or_else(|| Error::Answer {
                    what: format!("{what} of group {id}"),
                    path: format!("/v1.0/groups/{seg}"),
                    message: "a member has no \"id\"".into(),
                })?;
                if seen.insert(user.id.clone()) {
                    users.push(user);
                }
            }
            Ok(seen.into_iter().collect())
        };
        let members = direct
            .map(|d| ids(d, "members"))
            .transpose()?
            .unwrap_or_default();
        let transitive = transitive
            .map(|t| ids(t, "transitive members"))
            .transpose()?;
        let eligible = eligible_of(&eligibility);
        Ok(Some(GroupRead {
            group: SourceGroup {
                id: id.clone(),
                display_name,
                members,
                eligible,
            },
            users,
            transitive,
        }))
    }

    /// The group's PIM eligibility schedule instances (all pages).
    async fn read_eligibility(&self, id: &SourceId) -> Result<Vec<Value>, Error> {
        let url = self.pim_url("eligibilityScheduleInstances", id);
        self.http
            .get_all(url, &format!("PIM eligibility of group {id}"))
            .await
    }

    /// Whether PIM lists `user` as eligible for `group` now: one request (eligibility
    /// instances filtered by group and principal), its answer kept [`ELIGIBILITY_TTL`].
    async fn is_eligible(&self, group: &SourceId, user: &SourceId) -> Result<bool, Error> {
        let key = (group.clone(), user.clone());
        if let Some((at, yes)) = crate::locks::lock(&self.eligibility, "eligibility").get(&key)
            && at.elapsed() < ELIGIBILITY_TTL
        {
            return Ok(*yes);
        }
        let filter = format!(
            "groupId eq '{}' and principalId eq '{}'",
            group.as_str().replace('\'', "''"),
            user.as_str().replace('\'', "''")
        );
        let url = format!(
            "{}/v1.0/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances?$filter={}",
            self.graph_url,
            utf8_percent_encode(&filter, QUERY)
        );
        let found = self
            .http
            .get_all(
                url,
                &format!("PIM eligibility of user {user} for group {group}"),
            )
            .await?;
        let yes = eligible_of(&found).contains(user);
        let mut cache = crate::locks::lock(&self.eligibility, "eligibility");
        cache.retain(|_, (at, _)| at.elapsed() < ELIGIBILITY_TTL);
        cache.insert(key, (std::time::Instant::now(), yes));
        Ok(yes)
    }

    /// The users `ids`, each read on its own with `/v1.0/users/{id}` (`what` says why, e.g.
    /// `eligible user`); an id that is not a user (`404`) is left out.
    async fn read_users(&self, ids: Vec<SourceId>, what: &str) -> Result<Vec<SourceUser>, Error> {
        let found: Vec<Option<SourceUser>> = futures::stream::iter(ids)
            .map(|id| async move { self.read_user(&id, what).await })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn read_user(&self, id: &SourceId, what: &str) -> Result<Option<SourceUser>, Error> {
        let url = format!(
            "{}/v1.0/users/{}?$select={}",
            self.graph_url,
            utf8_percent_encode(id.as_str(), SEGMENT),
            utf8_percent_encode(&self.select, QUERY)
        );
        let found = self.http.get(&url, &format!("{what} {id}"), true).await?;
        if found.is_none() {
            tracing::debug!(user = %id, "{what} is not a user; left out");
        }
        Ok(found.and_then(to_user))
    }
}

/// The member principals of PIM eligibility schedule instances, in order, once each.
fn eligible_of(instances: &[Value]) -> Vec<SourceId> {
    let mut eligible = Vec::new();
    let mut seen = BTreeSet::new();
    for inst in instances {
        let member = inst
            .get("accessId")
            .and_then(Value::as_str)
            .is_none_or(|a| a.eq_ignore_ascii_case("member"));
        if let (true, Some(p)) = (member, inst.get("principalId").and_then(Value::as_str))
            && seen.insert(p)
        {
            eligible.push(SourceId::new(p));
        }
    }
    eligible
}

/// A Graph user object as a [`SourceUser`]: `id` taken out, OData annotations and nulls
/// dropped (an absent attribute and a null one map the same).
fn to_user(item: Value) -> Option<SourceUser> {
    let Value::Object(obj) = item else {
        return None;
    };
    let mut attrs = SourceAttrs::new();
    let mut id = None;
    for (k, v) in obj {
        if k == "id" {
            id = v.as_str().filter(|s| !s.is_empty()).map(SourceId::new);
        } else if !k.starts_with('@') && !v.is_null() {
            attrs.insert(k.into(), v);
        }
    }
    Some(SourceUser { id: id?, attrs })
}

impl GraphSource {
    /// `{graph_url}/v1.0/identityGovernance/privilegedAccess/group/{kind}` filtered to one
    /// group: PIM for Groups' eligibility and assignment schedule instances.
    fn pim_url(&self, kind: &str, group: &SourceId) -> String {
        format!("{}/v1.0{}", self.graph_url, pim_path(kind, group))
    }

    /// Each group's `kind` PIM schedule instances (all pages), read in `$batch`es of 20
    /// ([`batch`]), in the order of `groups`.
    async fn pim_reads(&self, kind: &str, groups: &[SourceId]) -> Vec<Result<Vec<Value>, Error>> {
        let what = if kind.starts_with("eligibility") {
            "PIM eligibility"
        } else {
            "PIM assignments"
        };
        let reads = groups
            .iter()
            .map(|g| (pim_path(kind, g), format!("{what} of group {g}")))
            .collect();
        self.http.get_all_batched(&self.graph_url, reads).await
    }

    /// Each group's PIM eligibility, batched (the snapshots' per-group reads).
    pub(super) async fn eligibility_of(
        &self,
        groups: &[SourceId],
    ) -> Result<Vec<Vec<Value>>, Error> {
        self.pim_reads("eligibilityScheduleInstances", groups)
            .await
            .into_iter()
            .collect()
    }

    /// The group's PIM assignment schedule instances (all pages), for the poller.
    ///
    /// # Errors
    /// [`Error`] when a page cannot be read or an instance has an unexpected shape.
    pub async fn assignment_instances(&self, group: &SourceId) -> Result<Vec<PimInstance>, Error> {
        let url = self.pim_url("assignmentScheduleInstances", group);
        let what = format!("PIM assignments of group {group}");
        let rows = self.http.get_all(url.clone(), &what).await?;
        instances(rows, &what, &url)
    }

    /// [`GraphSource::assignment_instances`] of each of `groups`, in `$batch`es of 20.
    pub async fn assignment_instances_of(
        &self,
        groups: &[SourceId],
    ) -> Vec<Result<Vec<PimInstance>, Error>> {
        let kind = "assignmentScheduleInstances";
        self.pim_reads(kind, groups)
            .await
            .into_iter()
            .zip(groups)
            .map(|(rows, g)| {
                let what = format!("PIM assignments of group {g}");
                instances(rows?, &what, &self.pim_url(kind, g))
            })
            .collect()
    }
}

/// `/identityGovernance/privilegedAccess/group/{kind}` filtered to one group, relative to
/// `/v1.0`: PIM for Groups' eligibility and assignment schedule instances.
fn pim_path(kind: &str, group: &SourceId) -> String {
    let filter = format!("groupId eq '{}'", group.as_str().replace('\'', "''"));
    format!(
        "/identityGovernance/privilegedAccess/group/{kind}?$filter={}",
        utf8_percent_encode(&filter, QUERY)
    )
}

/// Assignment schedule instances from Graph's JSON rows (read from `url`).
fn instances(rows: Vec<Value>, what: &str, url: &str) -> Result<Vec<PimInstance>, Error> {
    rows.into_iter()
        .map(|row| {
            serde_json::from_value::<AssignmentInstance>(row)
                .map(PimInstance::from)
                .map_err(|e| Error::Answer {
                    what: what.to_owned(),
                    path: http::url_path(url),
                    message: e.to_string(),
                })
        })
        .collect()
}

impl GraphSource {}

/// Graph's `privilegedAccessGroupAssignmentScheduleInstance`, the fields the poller uses.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentInstance {
    id: String,
    group_id: SourceId,
    principal_id: SourceId,
    /// `member` or `owner`; Graph may send `null`.
    access_id: Option<String>,
    /// `activated` or `assigned`, in either case (the docs show both); may be `null`.
    assignment_type: Option<String>,
    start_date_time: Option<chrono::DateTime<chrono::Utc>>,
    end_date_time: Option<chrono::DateTime<chrono::Utc>>,
    assignment_schedule_id: Option<String>,
}

impl From<AssignmentInstance> for PimInstance {
    fn from(a: AssignmentInstance) -> Self {
        PimInstance {
            id: a.id,
            group: a.group_id,
            user: a.principal_id,
            access_id: a.access_id.unwrap_or_default(),
            assignment_type: a.assignment_type.unwrap_or_default(),
            start: a.start_date_time,
            end: a.end_date_time,
            schedule: a.assignment_schedule_id,
        }
    }
}

/// The poller reads PIM activations from `assignmentScheduleInstances`.
impl PimFeed for GraphSource {
    fn describe(&self) -> String {
        crate::source::Source::describe(self)
    }

    fn active_instances(
        &self,
        group: &SourceId,
    ) -> BoxFuture<'_, Result<Vec<PimInstance>, crate::source::Error>> {
        let group = group.clone();
        Box::pin(async move {
            self.assignment_instances(&group)
                .await
                .map_err(crate::source::Error::from)
        })
    }

    fn active_instances_of<'a>(
        &'a self,
        groups: &'a [SourceId],
    ) -> BoxFuture<'a, Vec<Result<Vec<PimInstance>, crate::source::Error>>> {
        Box::pin(async move {
            self.assignment_instances_of(groups)
                .await
                .into_iter()
                .map(|r| r.map_err(crate::source::Error::from))
                .collect()
        })
    }

    fn request_of<'a>(
        &'a self,
        instance: &'a PimInstance,
    ) -> BoxFuture<'a, Result<Option<PimRequest>, crate::source::Error>> {
        Box::pin(async move {
            self.read_request(instance)
                .await
                .map_err(crate::source::Error::from)
        })
    }

    fn policy<'a>(
        &'a self,
        group: &'a SourceId,
    ) -> BoxFuture<'a, Result<Option<PimPolicy>, crate::source::Error>> {
        Box::pin(async move {
            self.read_policy(group)
                .await
                .map_err(crate::source::Error::from)
        })
    }
}

impl crate::source::Source for GraphSource {
    fn describe(&self) -> String {
        format!(
            "Microsoft Graph tenant {} at {}",
            self.tenant_id, self.graph_url
        )
    }

    /// One targeted read instead of the whole tenant; a failed read knows nothing.
    fn eligibility<'a>(
        &'a self,
        group: &'a SourceId,
        user: &'a SourceId,
    ) -> BoxFuture<'a, crate::source::Eligibility> {
        Box::pin(async move {
            match self.is_eligible(group, user).await {
                Ok(true) => crate::source::Eligibility::Eligible,
                Ok(false) => crate::source::Eligibility::NotEligible,
                Err(e) => {
                    tracing::warn!(group = %group, user = %user, error = %e, "targeted PIM eligibility read failed; reading the tenant");
                    crate::source::Eligibility::Unknown
                }
            }
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, crate::source::Error>> {
        Box::pin(async move {
            let mut dir = match &self.delta {
                Some(delta) => self.read_delta(delta).await,
                None => self.read().await,
            }
            .map_err(crate::source::Error::from)?;
            // Members were read page by page, each id its own copy.
            dir.share_ids();
            Ok(dir)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_instances_read_graph_json() {
        let i: PimInstance = PimInstance::from(
            serde_json::from_value::<AssignmentInstance>(serde_json::json!({
                "id": "inst-1",
                "groupId": "g-1",
                "principalId": "u-1",
                "accessId": "member",
                "assignmentType": "Activated",
                "memberType": "Direct",
                "startDateTime": "2026-03-01T12:00:00Z",
                "endDateTime": "2026-03-01T20:00:00.06Z",
                "assignmentScheduleId": "s-1"
            }))
            .unwrap(),
        );
        assert_eq!(i.group, SourceId::from("g-1"));
        assert_eq!(i.user, SourceId::from("u-1"));
        assert!(i.is_activated_member());
        assert_eq!(
            i.start.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-03-01T12:00:00+00:00")
        );
        assert!(i.end.is_some());
        let i: PimInstance = PimInstance::from(
            serde_json::from_value::<AssignmentInstance>(serde_json::json!({
                "id": "inst-2", "groupId": "g-1", "principalId": "u-1",
                "accessId": "owner", "assignmentType": null, "endDateTime": null
            }))
            .unwrap(),
        );
        assert!(!i.is_activated_member());
        assert_eq!(i.assignment_type, "");
        assert_eq!((i.start, i.end), (None, None));
    }
}
