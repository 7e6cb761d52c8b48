//! The messages as they cross `postMessage`: JS values made by
//! serde-wasm-bindgen (structured-cloned by the browser), not JSON text.
//! One serializer setting for both ends, so the page and the worker always
//! read what the other wrote.

use crate::messages::{Reply, Request};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::JsValue;

/// Plain objects for maps and `null` for `None` (what serde expects back);
/// `u64` as JS numbers, which refuses (an error, not a wrong value) any
/// count past 2^53. `f64` NaN and infinities travel as themselves.
const SERIALIZER: serde_wasm_bindgen::Serializer =
    serde_wasm_bindgen::Serializer::json_compatible();

/// A message that cannot be encoded or decoded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn encode<T: Serialize>(what: &str, m: &T) -> Result<JsValue, WireError> {
    m.serialize(&SERIALIZER)
        .map_err(|e| WireError(format!("cannot encode the {what}: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, v: JsValue) -> Result<T, WireError> {
    serde_wasm_bindgen::from_value(v).map_err(|e| WireError(format!("bad {what}: {e}")))
}

impl Request {
    /// The request as a JS value for `postMessage`.
    pub fn to_js(&self) -> Result<JsValue, WireError> {
        encode("request", self)
    }

    pub fn from_js(v: JsValue) -> Result<Self, WireError> {
        decode("request", v)
    }
}

impl Reply {
    /// The reply as a JS value for `postMessage`.
    pub fn to_js(&self) -> Result<JsValue, WireError> {
        encode("reply", self)
    }

    pub fn from_js(v: JsValue) -> Result<Self, WireError> {
        decode("reply", v)
    }
}
