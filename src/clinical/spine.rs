//! The Spine Secure Proxy headers (`Ssp-From`, `Ssp-To`, `Ssp-InteractionID`, `Ssp-TraceID`).

use super::Facts;
use crate::audit::record::Ssp;
use http::header::HeaderName;
use http::HeaderMap;

const SSP_FROM: HeaderName = HeaderName::from_static("ssp-from");
const SSP_TO: HeaderName = HeaderName::from_static("ssp-to");
const SSP_TRACE_ID: HeaderName = HeaderName::from_static("ssp-traceid");
const SSP_INTERACTION_ID: HeaderName = HeaderName::from_static("ssp-interactionid");

/// A header value worth recording: visible ASCII, at most 256 bytes.
pub(super) fn header_text(v: &[u8]) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= 256 && v.iter().all(|b| b.is_ascii_graphic());
    // Checked above: every byte is ASCII.
    ok.then(|| v.iter().map(|&b| b as char).collect())
}

/// The Spine headers into `f` (`clinical.ssp`, `clinical.trace_id`, `spine_interaction`).
pub(super) fn headers(f: &mut Facts, headers: &HeaderMap) {
    let get = |h: &HeaderName| headers.get(h).and_then(|v| header_text(v.as_bytes()));
    let ssp = Ssp {
        from: get(&SSP_FROM),
        to: get(&SSP_TO),
        interaction: get(&SSP_INTERACTION_ID),
        trace_id: get(&SSP_TRACE_ID),
    };
    if ssp == Ssp::default() {
        return;
    }
    f.clinical.trace_id.clone_from(&ssp.trace_id);
    f.spine_interaction.clone_from(&ssp.interaction);
    f.clinical.ssp = Some(ssp);
}
