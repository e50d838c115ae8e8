//! Refusals: each maps to one status and one reason (SPEC §4), in one `match`, rendered as
//! `{"error", "request_id", "message"}` JSON or, on FHIR (`epr`) routes, an OperationOutcome.
//! Bodies never carry internal details.

use crate::limit::Refusal;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, Clone)]
pub enum Rejection {
    /// Malformed or ambiguous request; the text says what, without echoing input.
    BadRequest(&'static str),
    UnknownOrg,
    NotAllowed,
    IdentityMismatch(&'static str),
    NoRoute,
    /// A body that must be inspected for patient identifiers is over the route's limit.
    BodyTooLarge,
    RateLimited(Refusal),
    /// Past the organisation's refusal budget (`[rate_limit] refusals_per_second`): counted,
    /// not recorded. `close`: it stands for a bad request, whose connection is closed all the
    /// same.
    RefusalBudget {
        retry_after_secs: u64,
        close: bool,
    },
    UpstreamUnavailable,
    AuditUnavailable,
    ShuttingDown,
    /// The bytes held for body inspection are at their global cap.
    Overloaded,
    UpstreamTimeout,
    /// The client stopped sending its request body for `listener.body_idle_timeout`.
    ClientTimeout,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::UnknownOrg | Rejection::NotAllowed | Rejection::IdentityMismatch(_) => StatusCode::FORBIDDEN,
            Rejection::NoRoute => StatusCode::NOT_FOUND,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RateLimited(_) | Rejection::RefusalBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::AuditUnavailable | Rejection::ShuttingDown | Rejection::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The reason, as in the JSON body and the audit record.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::UnknownOrg => "unknown_org",
            Rejection::NotAllowed => "not_allowed",
            Rejection::IdentityMismatch(_) => "identity_mismatch",
            Rejection::NoRoute => "no_route",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::RateLimited(_) => "rate_limited",
            Rejection::RefusalBudget { .. } => "refusal_budget",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::AuditUnavailable => "audit_unavailable",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::Overloaded => "overloaded",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::ClientTimeout => "client_timeout",
        }
    }

    /// One sentence for the person reading the response.
    pub fn message(&self) -> &'static str {
        match self {
            Rejection::BadRequest(why) => why,
            Rejection::UnknownOrg => "the client certificate does not identify an organisation known to this gateway",
            Rejection::NotAllowed => "your organisation is not allowed to make this request",
            Rejection::IdentityMismatch(why) => why,
            Rejection::NoRoute => "no service is published at this path",
            Rejection::BodyTooLarge => {
                "the request body is larger than this service reads to record the patients it names"
            }
            Rejection::RateLimited(_) => "too many requests from your organisation; retry after the time given",
            Rejection::RefusalBudget { .. } => {
                "too many refused requests from your organisation; retry after the time given"
            }
            Rejection::UpstreamUnavailable => "the service behind the gateway could not be reached",
            Rejection::AuditUnavailable => "the gateway cannot record access right now; retry later",
            Rejection::ShuttingDown => "the gateway is restarting; retry shortly",
            Rejection::Overloaded => "the gateway is busy; retry shortly",
            Rejection::UpstreamTimeout => "the service behind the gateway did not answer in time",
            Rejection::ClientTimeout => "the request body stopped arriving before it was complete",
        }
    }

    fn fhir_issue_code(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "invalid",
            Rejection::UnknownOrg | Rejection::NotAllowed | Rejection::IdentityMismatch(_) => "forbidden",
            Rejection::NoRoute => "not-found",
            Rejection::BodyTooLarge => "too-costly",
            Rejection::RateLimited(_) | Rejection::RefusalBudget { .. } => "throttled",
            Rejection::UpstreamUnavailable
            | Rejection::AuditUnavailable
            | Rejection::ShuttingDown
            | Rejection::Overloaded => "transient",
            Rejection::UpstreamTimeout | Rejection::ClientTimeout => "timeout",
        }
    }

    /// The response for this refusal. `fhir` selects an OperationOutcome body.
    pub fn render(&self, request_id: &str, fhir: bool) -> Response<Full<Bytes>> {
        let body = if fhir {
            serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "error",
                    "code": self.fhir_issue_code(),
                    "details": {"coding": [{"system": "https://caregate.example/reason", "code": self.reason()}], "text": self.reason()},
                    "diagnostics": format!("{} (request {request_id})", self.message()),
                }]
            })
        } else {
            serde_json::json!({"error": self.reason(), "request_id": request_id, "message": self.message()})
        };
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        let ct = if fhir {
            "application/fhir+json"
        } else {
            "application/json"
        };
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Rejection::RateLimited(r) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs()));
                if let Ok(v) = HeaderValue::from_str(&r.policy) {
                    h.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&r.state) {
                    h.insert("ratelimit", v);
                }
            }
            Rejection::RefusalBudget {
                retry_after_secs,
                close,
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                if *close {
                    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            Rejection::AuditUnavailable | Rejection::ShuttingDown => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Rejection::Overloaded => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Rejection::BadRequest(_) | Rejection::ClientTimeout => {
                // A request we could not parse unambiguously (or whose body stopped half-way)
                // leaves the connection in an unknown state: close it rather than read what
                // follows as another request.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_are_pinned() {
        let cases = [
            (Rejection::BadRequest("x"), 400, "bad_request"),
            (Rejection::UnknownOrg, 403, "unknown_org"),
            (Rejection::NotAllowed, 403, "not_allowed"),
            (Rejection::IdentityMismatch("x"), 403, "identity_mismatch"),
            (Rejection::NoRoute, 404, "no_route"),
            (Rejection::BodyTooLarge, 413, "body_too_large"),
            (
                Rejection::RefusalBudget {
                    retry_after_secs: 1,
                    close: false,
                },
                429,
                "refusal_budget",
            ),
            (Rejection::Overloaded, 503, "overloaded"),
            (Rejection::UpstreamUnavailable, 502, "upstream_unavailable"),
            (Rejection::AuditUnavailable, 503, "audit_unavailable"),
            (Rejection::ShuttingDown, 503, "shutting_down"),
            (Rejection::UpstreamTimeout, 504, "upstream_timeout"),
        ];
        for (r, status, reason) in cases {
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(r.reason(), reason);
            let resp = r.render("abc", false);
            assert_eq!(resp.status().as_u16(), status);
        }
    }

    /// A bad request past the budget still closes its connection: what follows it on the
    /// connection cannot be read as a request.
    #[test]
    fn a_bad_request_past_the_refusal_budget_still_closes_the_connection() {
        let over = |close| Rejection::RefusalBudget {
            retry_after_secs: 2,
            close,
        };
        let resp = over(true).render("abc", false);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert!(over(false)
            .render("abc", false)
            .headers()
            .get(header::CONNECTION)
            .is_none());
    }

    #[test]
    fn fhir_refusals_are_operation_outcomes_with_their_issue_code() {
        use http_body_util::BodyExt;
        let limited = Refusal {
            retry_after: std::time::Duration::from_millis(1500),
            policy: "50;w=1".into(),
            state: "limit=50, remaining=0, reset=2".into(),
        };
        let cases = [
            (Rejection::BadRequest("x"), "invalid"),
            (Rejection::UnknownOrg, "forbidden"),
            (Rejection::NotAllowed, "forbidden"),
            (Rejection::IdentityMismatch("x"), "forbidden"),
            (Rejection::NoRoute, "not-found"),
            (Rejection::BodyTooLarge, "too-costly"),
            (Rejection::Overloaded, "transient"),
            (Rejection::RateLimited(limited), "throttled"),
            (Rejection::UpstreamUnavailable, "transient"),
            (Rejection::AuditUnavailable, "transient"),
            (Rejection::ShuttingDown, "transient"),
            (Rejection::UpstreamTimeout, "timeout"),
        ];
        for (r, code) in cases {
            let resp = r.render("rid-1", true);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/fhir+json");
            let body = futures_util::FutureExt::now_or_never(resp.into_body().collect())
                .unwrap()
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["resourceType"], "OperationOutcome");
            assert_eq!(v["issue"][0]["severity"], "error");
            assert_eq!(v["issue"][0]["code"], code, "{}", r.reason());
            assert_eq!(v["issue"][0]["details"]["coding"][0]["code"], r.reason());
            assert!(v["issue"][0]["diagnostics"].as_str().unwrap().contains("rid-1"));
        }
    }
}
