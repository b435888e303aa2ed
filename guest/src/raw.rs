//! Between this crate's types and the generated ones.

use crate::bindings::wasmlock::lock::types;
use crate::{Holder, HolderKind, Kind, Mode, Wait};

pub(crate) fn mode(m: Mode) -> types::Mode {
    match m {
        Mode::Exclusive => types::Mode::Exclusive,
        Mode::Shared => types::Mode::Shared,
    }
}

pub(crate) fn from_mode(m: types::Mode) -> Mode {
    match m {
        types::Mode::Exclusive => Mode::Exclusive,
        types::Mode::Shared => Mode::Shared,
    }
}

pub(crate) fn kind(k: Kind) -> types::Kind {
    match k {
        Kind::Os => types::Kind::Os,
        Kind::Soft => types::Kind::Soft,
    }
}

pub(crate) fn wait(w: Wait) -> types::Wait {
    match w {
        Wait::Forever => types::Wait::Forever,
        Wait::TryOnce => types::Wait::TryOnce,
        Wait::Timeout(d) => types::Wait::Timeout(d.as_nanos().min(u64::MAX as u128) as u64),
    }
}

pub(crate) fn holder(h: types::Holder) -> Holder {
    Holder {
        kind: match h.kind {
            types::HolderKind::ThisGuest => HolderKind::ThisGuest,
            types::HolderKind::ThisHost => HolderKind::ThisHost,
            types::HolderKind::Elsewhere => HolderKind::Elsewhere,
        },
        pid: h.pid,
        host: h.host,
        since: h.since.map(|t| (t.seconds, t.nanoseconds)),
    }
}
