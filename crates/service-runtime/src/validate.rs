//! Every request is checked once at the edge, before any handler sees it, by a tower layer
//! driven by the descriptor set: every string field of the request (at any depth) is at most
//! its length limit and holds no control character, and every enum field holds a value the
//! proto declares. A violation answers `INVALID_ARGUMENT` naming the field by its path
//! (`users[3].email`), and the request goes no further: nothing is written, nothing is logged
//! above DEBUG.
//!
//! The walk reads the encoded request (the gRPC frame's bytes) field by field against rules
//! compiled once from the descriptor set, so it allocates nothing for a valid request and
//! costs one pass over the bytes (an `ImportUsers` of 1000 users is ~300 KB).
//!
//! Length limits come from one table, [`STRING_LIMITS`], by field name, and are listed in each
//! service proto's header. Handlers keep the checks that depend on meaning (a GUID's shape, a
//! company's existence); this layer only guarantees that what reaches them is bounded text.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::codegen::http;

/// The longest value, in bytes of UTF-8, of a request's string field, by the field's name:
/// the first entry that matches wins (`*_id` matches names ending in `_id`, `*` any name).
pub const STRING_LIMITS: &[(&str, usize)] = &[
    ("page_token", 1024),
    ("email", 254),
    ("mail", 254),
    ("mails", 254),
    ("monitoring_category", 64),
    ("batch_group", 64),
    ("company", 64),
    ("code", 64),
    // 256 characters of any script (Entra's own limit for names is 256 characters).
    ("name", 1024),
    ("display_name", 1024),
    ("given_name", 1024),
    ("surname", 1024),
    ("reason", 1024),
    ("description", 1024),
    ("note", 1024),
    // A select import's request id is its job id and the registry's import id.
    ("request_id", 128),
    ("import_id", 128),
    ("job_id", 128),
    ("created_by_import", 128),
    ("via", 128),
    ("*_id", 64),
    ("*_ids", 64),
    ("not_found", 64),
    ("*", 256),
];

/// The length limit of a string field named `field` (see [`STRING_LIMITS`]).
pub fn string_limit(field: &str) -> usize {
    for (pattern, limit) in STRING_LIMITS {
        let matches = match pattern.strip_prefix('*') {
            Some(suffix) => field.ends_with(suffix),
            None => field == *pattern,
        };
        if matches {
            return *limit;
        }
    }
    256
}

/// `value` cut to at most `max` bytes at a character boundary: how text from the directory,
/// which no request limit bounds, is made to fit a field before it is stored or sent on.
pub fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A request field that breaks a rule: its path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path from the request: `object_ids[2]`, `users[0].email`, `scope.group.group_id`.
    pub field: String,
    pub reason: String,
}

impl From<Violation> for tonic::Status {
    fn from(violation: Violation) -> Self {
        crate::error::invalid_field(&violation.field, violation.reason)
    }
}

#[derive(Debug)]
enum Rule {
    Text { limit: usize },
    Enum(usize),
    Message(usize),
    Other,
}

#[derive(Debug)]
struct FieldRule {
    name: String,
    repeated: bool,
    rule: Rule,
}

#[derive(Debug, Default)]
struct MessageRules {
    fields: HashMap<u32, FieldRule>,
}

/// The rules of every request of the product, compiled from the descriptor set.
#[derive(Debug)]
pub struct Rules {
    messages: Vec<MessageRules>,
    enums: Vec<HashSet<i32>>,
    /// `/package.Service/Method` → its request message.
    methods: HashMap<String, usize>,
}

/// The rules of the product's protos (compiled on first use).
pub fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules::compile(proto::FILE_DESCRIPTOR_SET))
}

impl Rules {
    /// Compiles `descriptor_set`; a descriptor set that does not decode yields no rules (the
    /// product's own is generated at build time and always decodes).
    pub fn compile(descriptor_set: &[u8]) -> Self {
        let set = prost_types::FileDescriptorSet::decode(descriptor_set).unwrap_or_default();
        // Names first, so fields can refer to messages and enums declared anywhere.
        let mut message_index = HashMap::new();
        let mut enum_index = HashMap::new();
        let mut enums = Vec::new();
        let mut pending = Vec::new();
        for file in &set.file {
            let package = file.package();
            let prefix = if package.is_empty() {
                String::new()
            } else {
                format!(".{package}")
            };
            for enumeration in &file.enum_type {
                enum_index.insert(format!("{prefix}.{}", enumeration.name()), enums.len());
                enums.push(enumeration.value.iter().map(|v| v.number()).collect());
            }
            let mut stack: Vec<(String, &prost_types::DescriptorProto)> = file
                .message_type
                .iter()
                .map(|m| (format!("{prefix}.{}", m.name()), m))
                .collect();
            while let Some((name, message)) = stack.pop() {
                for enumeration in &message.enum_type {
                    enum_index.insert(format!("{name}.{}", enumeration.name()), enums.len());
                    enums.push(enumeration.value.iter().map(|v| v.number()).collect());
                }
                for nested in &message.nested_type {
                    stack.push((format!("{name}.{}", nested.name()), nested));
                }
                message_index.insert(name, pending.len());
                pending.push(message);
            }
        }
        let messages = pending
            .iter()
            .map(|message| MessageRules {
                fields: message
                    .field
                    .iter()
                    .map(|field| {
                        let rule = match field.r#type() {
                            Type::String => Rule::Text {
                                limit: string_limit(field.name()),
                            },
                            Type::Enum => enum_index
                                .get(field.type_name())
                                .map_or(Rule::Other, |&i| Rule::Enum(i)),
                            Type::Message => message_index
                                .get(field.type_name())
                                .map_or(Rule::Other, |&i| Rule::Message(i)),
                            _ => Rule::Other,
                        };
                        (
                            u32::try_from(field.number()).unwrap_or(0),
                            FieldRule {
                                name: field.name().to_owned(),
                                repeated: field.label() == Label::Repeated,
                                rule,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut methods = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    if let Some(&input) = message_index.get(method.input_type()) {
                        let path = format!(
                            "/{}{}{}/{}",
                            file.package(),
                            if file.package().is_empty() { "" } else { "." },
                            service.name(),
                            method.name()
                        );
                        methods.insert(path, input);
                    }
                }
            }
        }
        Self {
            messages,
            enums,
            methods,
        }
    }

    /// True when `path` is an RPC of the product (`/package.Service/Method`).
    pub fn knows(&self, path: &str) -> bool {
        self.methods.contains_key(path)
    }

    /// Checks `message`, the encoded request of RPC `path`. An RPC that is not ours passes
    /// (its server answers it).
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), Violation> {
        match self.methods.get(path) {
            Some(&input) => self.walk(input, message),
            None => Ok(()),
        }
    }

    fn walk(&self, message: usize, mut buf: &[u8]) -> Result<(), Violation> {
        let Some(rules) = self.messages.get(message) else {
            return Ok(());
        };
        // Positions of repeated fields seen so far, for paths like `users[3]`; kept only
        // when the message has repeated fields.
        let mut seen: Vec<(u32, usize)> = Vec::new();
        while !buf.is_empty() {
            // A malformed encoding is left to the decoder, which refuses it.
            let Ok(key) = prost::encoding::decode_varint(&mut buf) else {
                return Ok(());
            };
            let number = u32::try_from(key >> 3).unwrap_or(0);
            let wire_type = key & 7;
            let field = rules.fields.get(&number);
            let index = match field {
                Some(field) if field.repeated => {
                    let position = match seen.iter_mut().find(|(n, _)| *n == number) {
                        Some((_, count)) => {
                            *count += 1;
                            *count - 1
                        }
                        None => {
                            seen.push((number, 1));
                            0
                        }
                    };
                    Some(position)
                }
                _ => None,
            };
            let at = |field: &FieldRule| match index {
                Some(i) => format!("{}[{i}]", field.name),
                None => field.name.clone(),
            };
            match wire_type {
                0 => {
                    let Ok(value) = prost::encoding::decode_varint(&mut buf) else {
                        return Ok(());
                    };
                    if let Some(
                        field @ FieldRule {
                            rule: Rule::Enum(e),
                            ..
                        },
                    ) = field
                    {
                        self.check_enum(*e, value, || at(field))?;
                    }
                }
                1 => buf = buf.get(8..).unwrap_or_default(),
                5 => buf = buf.get(4..).unwrap_or_default(),
                2 => {
                    let Ok(len) = prost::encoding::decode_varint(&mut buf) else {
                        return Ok(());
                    };
                    let Some(value) = usize::try_from(len).ok().and_then(|len| buf.get(..len))
                    else {
                        return Ok(());
                    };
                    buf = &buf[value.len()..];
                    match field {
                        Some(
                            field @ FieldRule {
                                rule: Rule::Text { limit },
                                ..
                            },
                        ) => check_text(value, *limit).map_err(|reason| Violation {
                            field: at(field),
                            reason,
                        })?,
                        Some(
                            field @ FieldRule {
                                rule: Rule::Message(m),
                                ..
                            },
                        ) => self.walk(*m, value).map_err(|inner| Violation {
                            field: format!("{}.{}", at(field), inner.field),
                            reason: inner.reason,
                        })?,
                        Some(
                            field @ FieldRule {
                                rule: Rule::Enum(e),
                                ..
                            },
                        ) => {
                            // A packed repeated enum.
                            let mut packed = value;
                            let mut position = 0;
                            while !packed.is_empty() {
                                let Ok(number) = prost::encoding::decode_varint(&mut packed) else {
                                    return Ok(());
                                };
                                self.check_enum(*e, number, || {
                                    format!("{}[{position}]", field.name)
                                })?;
                                position += 1;
                            }
                        }
                        _ => {}
                    }
                }
                // Groups (3, 4) are not used by proto3; leave the rest to the decoder.
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    fn check_enum(
        &self,
        enumeration: usize,
        value: u64,
        field: impl FnOnce() -> String,
    ) -> Result<(), Violation> {
        // Enums are int32 on the wire (negative ones sign-extended to 64 bits).
        let number = value as i64 as i32;
        match self.enums.get(enumeration) {
            Some(values) if !values.contains(&number) => Err(Violation {
                field: field(),
                reason: format!("{number} is not one of the values this field takes"),
            }),
            _ => Ok(()),
        }
    }
}

/// Checks one string value: at most `limit` bytes, no control character (C0, DEL, C1).
/// Invalid UTF-8 is left to the decoder, which refuses it.
fn check_text(value: &[u8], limit: usize) -> Result<(), String> {
    if value.len() > limit {
        return Err(format!("{} bytes; the limit is {limit} bytes", value.len()));
    }
    // C0 controls and DEL are single bytes; C1 controls (U+0080–U+009F) are 0xC2 0x80–0x9F.
    let mut previous = 0u8;
    for (position, &byte) in value.iter().enumerate() {
        if byte < 0x20 || byte == 0x7f || (previous == 0xc2 && (0x80..=0x9f).contains(&byte)) {
            let position = if previous == 0xc2 {
                position - 1
            } else {
                position
            };
            return Err(format!(
                "contains a control character at byte {position}; none is allowed"
            ));
        }
        previous = byte;
    }
    Ok(())
}

/// Checks every request of the product's RPCs against [`rules`] before the handler runs; a
/// tower layer that servers put behind their guard.
#[derive(Clone, Copy, Default)]
pub struct ValidateLayer;

impl<S> tower::Layer<S> for ValidateLayer {
    type Service = Validated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validated { inner }
    }
}

/// A service whose requests are checked first.
#[derive(Clone)]
pub struct Validated<S> {
    inner: S,
}

impl<S, R> tower::Service<http::Request<tonic::body::Body>> for Validated<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rules = rules();
        if !rules.knows(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let (parts, body) = request.into_parts();
            // Every RPC of ours takes one request message: read its frame (bounded by the
            // message limit, as the decoder would be), check it, and hand the same bytes on.
            let limit = crate::grpc::MAX_MESSAGE_BYTES + 5;
            let bytes: Bytes = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = if error.is::<http_body_util::LengthLimitError>() {
                        crate::error::status(
                            tonic::Code::ResourceExhausted,
                            crate::error::reason::MESSAGE_TOO_LARGE,
                            format!(
                                "the request is larger than {} bytes",
                                crate::grpc::MAX_MESSAGE_BYTES
                            ),
                        )
                    } else {
                        tonic::Status::cancelled("the request was not received whole")
                    };
                    return Ok(status.into_http());
                }
            };
            // A compressed frame could not be checked without inflating it here: refused, as
            // the services accept no compression anyway (so a future `accept_compressed` cannot
            // open a way around this layer unnoticed).
            if bytes.first() == Some(&1) {
                let status = tonic::Status::unimplemented("compressed requests are not accepted");
                return Ok(status.into_http());
            }
            // An uncompressed frame (flag 0) holding exactly one message is checked; anything
            // else is the decoder's to refuse.
            if let [0, a, b, c, d, message @ ..] = &bytes[..]
                && u32::from_be_bytes([*a, *b, *c, *d]) as usize == message.len()
                && let Err(violation) = rules.check(&path, message)
            {
                tracing::debug!(rpc = %path, field = %violation.field, "request refused at the edge");
                return Ok(tonic::Status::from(violation).into_http());
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_table_by_field_name() {
        assert_eq!(string_limit("object_id"), 64);
        assert_eq!(string_limit("object_ids"), 64);
        assert_eq!(string_limit("email"), 254);
        assert_eq!(string_limit("page_token"), 1024);
        assert_eq!(string_limit("search"), 256);
        assert_eq!(string_limit("network_domain"), 256);
        assert_eq!(string_limit("display_name"), 1024);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 8), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("aéb", 3), "aé");
    }

    #[test]
    fn control_characters_and_long_values_are_refused_and_others_pass() {
        assert!(check_text(b"Ad\xc3\xa8le Vance", 64).is_ok());
        assert!(check_text(b"a\0b", 64).unwrap_err().contains("byte 1"));
        assert!(check_text(b"a\tb", 64).is_err());
        assert!(check_text(b"a\x7fb", 64).is_err());
        assert!(
            check_text("a\u{85}b".as_bytes(), 64)
                .unwrap_err()
                .contains("byte 1")
        );
        assert!(
            check_text(&[b'a'; 65], 64)
                .unwrap_err()
                .contains("65 bytes")
        );
    }

    #[test]
    fn every_rpc_of_the_product_has_rules() {
        let rules = rules();
        assert!(rules.methods.len() >= 28, "{}", rules.methods.len());
        assert!(rules.knows("/userimport.registry.v1.RegistryService/ImportUsers"));
    }
}
