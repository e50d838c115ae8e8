//! Placeholder until body inspection lands (removed by it).
use super::Facts;

pub struct Options;
impl Options {
    pub fn of(_route: &crate::config::Route) -> Options {
        Options
    }
}
pub struct BodyError;
pub fn inspectable(_content_type: Option<&[u8]>) -> bool {
    false
}
pub fn inspect_body(_ct: Option<&[u8]>, _body: &[u8], _o: &Options, _f: &mut Facts) -> Result<(), BodyError> {
    Ok(())
}
