//! Inputs from a Prometheus-compatible HTTP API: instant queries
//! (`GET /api/v1/query?query=...`) whose answer is one number.
//!
//! The answer is outside input and is parsed strictly
//! ([`parse_instant`]): `status` must be `success`; the result must be a
//! scalar or a vector of at most one series; the value must be a finite,
//! non-negative number. An empty vector is reported as such
//! ([`Sample::Empty`]), not as zero: a query over series that do not exist
//! (a service at zero replicas exporting nothing, a typo in a label) must
//! not read as "no load". What an empty answer means is the caller's
//! choice. Every other shape is an error that names what was wrong.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The largest answer read (a one-number query answers in well under 1 KiB).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One instant query's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// A vector with no series.
    Empty,
    /// The value.
    Value(f64),
}

/// Why a query gave no number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromError {
    /// The endpoint could not be reached or did not answer in time.
    #[error("querying {url}: {message}")]
    Connect {
        /// The URL asked.
        url: String,
        /// What failed.
        message: String,
    },
    /// An HTTP status other than 200 (Prometheus answers 400 and 422 with an
    /// error body, which is quoted).
    #[error("querying {url}: HTTP {code}{detail}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        code: u16,
        /// The error Prometheus gave, if the body said.
        detail: String,
    },
    /// The body is not the API's JSON.
    #[error("the answer is not a Prometheus API response: {0}")]
    Malformed(String),
    /// `status: error`.
    #[error("the query failed ({error_type}): {error}")]
    Failed {
        /// `errorType`.
        error_type: String,
        /// `error`.
        error: String,
    },
    /// A result type other than scalar or vector.
    #[error(
        "the query returned a {0}, not a scalar or a vector (use an instant query such as sum(rate(...[2m])))"
    )]
    ResultType(String),
    /// More than one series.
    #[error("the query returned {0} series, not one (aggregate it, e.g. with sum(...))")]
    ManySeries(usize),
    /// A value that is not a finite non-negative number.
    #[error("the query returned {0:?}, not a finite non-negative number")]
    BadValue(String),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// `[time, "value"]`: the value as Prometheus writes it (a string, so that
/// `NaN` and `+Inf` can be written).
fn value_of(pair: &serde_json::Value) -> Result<f64, PromError> {
    let text = pair
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| a[1].as_str())
        .ok_or_else(|| {
            PromError::Malformed(format!(
                "a sample is {pair}, not [time, \"value\"] with the value a string"
            ))
        })?;
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(PromError::BadValue(text.to_owned())),
    }
}

/// Parses an instant query's answer.
pub fn parse_instant(body: &[u8]) -> Result<Sample, PromError> {
    let r: Response =
        serde_json::from_slice(body).map_err(|e| PromError::Malformed(e.to_string()))?;
    if r.status != "success" {
        return Err(PromError::Failed {
            error_type: r.error_type.unwrap_or_else(|| r.status.clone()),
            error: r.error.unwrap_or_default(),
        });
    }
    let d = r
        .data
        .ok_or_else(|| PromError::Malformed("status success without data".into()))?;
    match d.result_type.as_str() {
        "scalar" => value_of(&d.result).map(Sample::Value),
        "vector" => {
            let series = d
                .result
                .as_array()
                .ok_or_else(|| PromError::Malformed("a vector result that is no list".into()))?;
            match series.as_slice() {
                [] => Ok(Sample::Empty),
                [one] => {
                    let v = one
                        .get("value")
                        .ok_or_else(|| PromError::Malformed("a series without \"value\"".into()))?;
                    value_of(v).map(Sample::Value)
                }
                many => Err(PromError::ManySeries(many.len())),
            }
        }
        other => Err(PromError::ResultType(other.to_owned())),
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved bytes are
/// kept as they are).
pub fn encode_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// A client of one Prometheus-compatible endpoint.
#[derive(Clone)]
pub struct PromClient {
    base: String,
    timeout: Duration,
    client: Client<HttpsConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient")
            .field("url", &self.base)
            .finish()
    }
}

impl PromClient {
    /// A client of the endpoint at `url` (`http://` or `https://`, the
    /// system's roots trusted), each query bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<PromClient, PromError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| PromError::Connect {
                url: url.to_owned(),
                message: format!("loading the system's TLS roots: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(PromClient {
            base: url.trim().trim_end_matches('/').to_owned(),
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Runs one instant query.
    pub async fn query(&self, promql: &str) -> Result<Sample, PromError> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode_param(promql));
        let connect = |message: String| PromError::Connect {
            url: url.clone(),
            message,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| connect(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| connect(e.to_string()))?;
            let code = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| connect(format!("reading the answer: {e}")))?
                .to_bytes();
            if code != 200 {
                // Prometheus explains a 400/422 in the usual error body.
                let detail = match parse_instant(&body) {
                    Err(PromError::Failed { error, .. }) => format!(": {error}"),
                    _ => String::new(),
                };
                return Err(PromError::Status {
                    url: url.clone(),
                    code,
                    detail,
                });
            }
            parse_instant(&body)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(connect(format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Sample, PromError> {
        parse_instant(s.as_bytes())
    }

    #[test]
    fn answers_as_prometheus_writes_them() {
        let cases: &[(&str, Result<Sample, &str>)] = &[
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"12.5"]}]}}"#,
                Ok(Sample::Value(12.5)),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                Ok(Sample::Empty),
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#,
                Ok(Sample::Value(3.0)),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}]}}"#,
                Err("2 series"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                Err("matrix"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                Err("\"NaN\""),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
                Err("finite"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-1"]}]}}"#,
                Err("non-negative"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}"#,
                Err("value a string"),
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                Err("bad_data"),
            ),
            (r#"{"status":"success"}"#, Err("without data")),
            ("<html>gateway timeout</html>", Err("not a Prometheus API")),
            ("", Err("not a Prometheus API")),
        ];
        for (body, want) in cases {
            let got = p(body);
            match want {
                Ok(v) => assert_eq!(got.as_ref(), Ok(v), "{body}"),
                Err(frag) => {
                    let e = got.expect_err(body).to_string();
                    assert!(e.contains(frag), "{body}: {e:?} lacks {frag:?}");
                }
            }
        }
    }

    #[test]
    fn query_parameters_are_percent_encoded() {
        assert_eq!(
            encode_param(r#"sum(rate(x{a="b"}[2m]))"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B2m%5D%29%29"
        );
        assert_eq!(encode_param("a b+c"), "a%20b%2Bc");
        assert_eq!(encode_param("vllm:x_total"), "vllm%3Ax_total");
    }

    proptest::proptest! {
        /// Whatever bytes come back, parsing returns (never panics), and a
        /// value it gives is finite and non-negative.
        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(Sample::Value(v)) = parse_instant(&body) {
                proptest::prop_assert!(v.is_finite() && v >= 0.0);
            }
        }

        /// Any finite non-negative value written as Prometheus writes it
        /// comes back.
        #[test]
        fn values_round_trip(v in 0.0f64..1e12) {
            let body = format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#);
            proptest::prop_assert_eq!(parse_instant(body.as_bytes()), Ok(Sample::Value(v)));
        }
    }
}
