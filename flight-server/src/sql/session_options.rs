//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
//!
//! arrow-flight 59 neither generates these messages nor routes these actions through
//! `FlightSqlService`, so the router intercepts them and the messages are declared here
//! from `Flight.proto` (field numbers and types as in the specification).
//!
//! Sessions are stateless on this server: every request is authorised from its token,
//! so the only options are the fixed catalog and schema. Setting them to their values is
//! accepted; anything else is reported per option, as the protocol asks.

use std::collections::HashMap;

use super::session::{CATALOG, SCHEMA};

pub(crate) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
pub(crate) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
pub(crate) const CLOSE_SESSION: &str = "CloseSession";

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "session_option_value::OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<session_option_value::OptionValue>,
}

pub mod session_option_value {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    /// Variant names follow `Flight.proto`'s field names.
    #[allow(clippy::enum_variant_names)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum OptionValue {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        StringListValue(StringListValue),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    /// `SetSessionOptionsResult.ErrorValue`.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// `CloseSessionResult.Status`: 1 is CLOSED.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const INVALID_NAME: i32 = 1;
const INVALID_VALUE: i32 = 2;
pub(crate) const CLOSED: i32 = 1;

fn text(value: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(session_option_value::OptionValue::StringValue(
            value.to_string(),
        )),
    }
}

/// The session's options: where unqualified table names resolve.
pub(crate) fn current() -> GetSessionOptionsResult {
    GetSessionOptionsResult {
        session_options: HashMap::from([
            ("catalog".to_string(), text(CATALOG)),
            ("schema".to_string(), text(SCHEMA)),
        ]),
    }
}

/// Answers a `SetSessionOptions` request option by option.
pub(crate) fn set(request: &SetSessionOptionsRequest) -> SetSessionOptionsResult {
    let fixed = current().session_options;
    let errors = request
        .session_options
        .iter()
        .filter_map(|(name, value)| {
            let code = match fixed.get(name) {
                None => INVALID_NAME,
                Some(ours) if ours == value => return None,
                Some(_) => INVALID_VALUE,
            };
            Some((name.clone(), SetSessionOptionsError { value: code }))
        })
        .collect();
    SetSessionOptionsResult { errors }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn options_are_answered_one_by_one_and_round_trip() {
        let request = SetSessionOptionsRequest {
            session_options: HashMap::from([
                ("catalog".to_string(), text(CATALOG)),
                ("schema".to_string(), text("other")),
                ("timezone".to_string(), text("UTC")),
            ]),
        };
        let decoded =
            SetSessionOptionsRequest::decode(request.encode_to_vec().as_slice()).expect("decode");
        let result = set(&decoded);
        assert_eq!(result.errors.len(), 2);
        assert_eq!(result.errors["schema"].value, INVALID_VALUE);
        assert_eq!(result.errors["timezone"].value, INVALID_NAME);
    }
}
